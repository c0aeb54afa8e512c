package truststore

import (
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

// origin says which source (and file) holds anchor, for explain: the
// pool source's own answer when it has one (verify.OriginTeller), else
// its module type.
func (v *LiveTrust) origin(anchor *x509.Certificate) string {
	if o, ok := v.pool.(verify.OriginTeller); ok {
		return o.AnchorOrigin(anchor)
	}
	return fmt.Sprintf("trust pool %T", v.pool)
}

// AnchorOrigin says which source and file of the version in force holds
// anchor: "<kind> <name>", for a SPIFFE authority its trust domain, and
// the file that holds it (read again, PEM only, when there are several);
// with anchor nil, the source and its files. It implements
// verify.OriginTeller.
func (lp *livePool) AnchorOrigin(anchor *x509.Certificate) string {
	if lp.Src == nil {
		return "trust pool (not loaded)"
	}
	l := lp.Src.CurrentLoaded()
	out := lp.Src.Kind() + " " + lp.Src.Name()
	if anchor != nil {
		if td := verify.AnchorDomain(anchor); td != "" {
			out += ", trust domain " + td
		}
		switch f := fileHolding(l.Files, anchor); {
		case f == lp.Src.Name():
			return out
		case f != "":
			return out + " (file " + f + ")"
		}
	}
	if len(l.Files) > 0 {
		return out + " (files " + strings.Join(l.Files, ", ") + ")"
	}
	return out
}

// fileHolding is the file of files that holds anchor: the only one, or
// the PEM file whose certificates include it ("" when none says so).
func fileHolding(files []string, anchor *x509.Certificate) string {
	if len(files) == 1 {
		return files[0]
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		certs, err := material.ParsePEMCertificates(data)
		if err != nil {
			continue
		}
		for _, c := range certs {
			if c.Equal(anchor) {
				return f
			}
		}
	}
	return ""
}
