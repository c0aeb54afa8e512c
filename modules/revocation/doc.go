// Package revocation decides whether the certificates of a verified chain
// are revoked: CRLs (files watched as material, or fetched from the
// certificates' distribution points) and OCSP. It is a trust decision, so
// it sits beside material; the peer verifier (`verifier peer { crl ...;
// ocsp ... }`) holds a *Revocation in its JSON and calls it on the chain
// it verified.
package revocation
