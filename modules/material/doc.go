// Package material holds the trust and identity material that every trustline
// module shares: the reloadable value (current material behind an atomic
// pointer, watched files, last good version kept) and the store reader for
// PEM, PKCS#12 and JKS files.
package material
