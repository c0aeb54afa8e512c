// Package keystore provides identity sources (who am I): a certificate chain
// and its key from PEM files, PKCS#12 or JKS keystores, or Caddy's internal CA.
package keystore
