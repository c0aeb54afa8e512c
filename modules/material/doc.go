// Package material holds the trust and identity material that every
// trustline module shares. It registers no Caddy module. Its concerns:
//
//   - the reloadable value (reloadable.go, held.go, inode_*.go):
//     Reloadable[T] keeps the current version behind an atomic pointer,
//     loads it first in Provision, watches its files (fsnotify on their
//     directories, plus a periodic stat-and-compare) or polls, keeps the
//     last good version when a reload fails, and is shared across the old
//     and new configs of an admin reload through Acquire/Release (Held in
//     a module), keyed by a Spec whose secrets are hashed (HashSecret);
//   - its metrics (metrics.go): reloads by result, certificates and the
//     earliest not-after per source, and RegisterCollectors, the one way
//     the suite's package-level collectors join Caddy's per-config
//     registry;
//   - the store reader (store.go, jksshape.go, pkcs12cap.go): PEM,
//     PKCS#12 and JKS, the format detected from the content, for both
//     roles: trusted certificates (ReadTrustAnchors) and a key with its
//     chain (ReadKeyStore), with JKS lengths bounded against the file and
//     PKCS#12 key derivation capped (MaxPKCS12Iterations);
//   - the strict PEM reader (pem.go): DecodePEM and its certificate and
//     key parsers refuse a file that is not whole, naming the line;
//   - CRL files (crl.go): ParseCRLs, PEM or DER;
//   - files and paths (files.go): ExpandPaths turns files, directories
//     and globs into files, ReadFiles reads them with one digest for
//     change detection;
//   - secrets (secret.go): ResolveSecret resolves a password from
//     {env.*} or {file.*} and never logs or quotes it;
//   - one way to print (certname.go): SerialString, TimeString and
//     TimeField for serials and times in errors, logs and the admin API.
//
// Sub-package castore reads a CA of Caddy's pki app as storage holds it.
package material
