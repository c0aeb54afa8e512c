// Package material holds the trust and identity material every trustline
// module shares; it registers no Caddy module. Reloadable[T] (shared across
// configs through Acquire/Release, held by a module as Held) keeps the
// current version of a source, reloads it on file changes or polls, keeps
// the last good version and reports metrics. Beside it: the one store
// reader (PEM, PKCS#12, JKS; ReadTrustAnchors, ReadKeyStore), the strict
// PEM reader (DecodePEM), CRL files, paths and files (ExpandPaths,
// ReadFiles), secrets (ResolveSecret) and the one way to print serials and
// times. Sub-package castore reads a CA of Caddy's pki app from storage.
// See docs/architecture.md.
package material
