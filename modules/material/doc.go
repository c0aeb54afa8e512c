// Package material holds the trust and identity material every trustline
// module shares; it registers no Caddy module. Reloadable[T] (shared
// through Acquire/Release, held by a module as Held) keeps the last good
// version of a source and reloads it on change; beside it the one store
// reader (ReadTrustAnchors, ReadKeyStore), the strict PEM reader
// (DecodePEM), paths, secrets and the one way to print serials and times.
// Sub-package castore reads a CA of Caddy's pki app from storage. See
// README.md and docs/architecture.md.
package material
