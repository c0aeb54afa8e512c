package revocation

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// CRL files are material like truststores: each file is a shared
// material.Reloadable (fsnotify on its directory plus a 1-second stat
// check, so a replaced CRL is in force within 2 seconds; shared by the old
// and new configs of an admin reload; trustline_material_* metrics with
// kind "crl", the not-after gauge holding the earliest nextUpdate). A new
// version is refused, and the last good one kept and logged, when it does
// not parse, holds no CRL, or would step back: a CRL whose number is lower
// than the one in force for the same issuer, or one whose signature does
// not verify against the issuer that the CRL in force was verified with.

// crlFile is one CRL file's current CRLs.
type crlFile struct {
	material.Held[[]*crlEntry]
}

func (f *crlFile) current() []*crlEntry { return f.Src.Current() }

// acquireCRLFile loads (or joins) the reloadable CRLs of path.
func acquireCRLFile(ctx caddy.Context, path string, logger *zap.Logger) (*crlFile, error) {
	var self atomic.Pointer[material.Reloadable[[]*crlEntry]] // for the step-back checks
	f := new(crlFile)
	err := f.Acquire(ctx, material.Spec[[]*crlEntry]{
		Kind:  "crl",
		Name:  path,
		Key:   "crl|" + path,
		Watch: []string{path},
		Load: func() (*material.Loaded[[]*crlEntry], error) {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("crl %s: %w", path, err)
			}
			entries, err := parseCRLFile(path, data, time.Now())
			if err != nil {
				return nil, err
			}
			if r := self.Load(); r != nil {
				if err := checkSuccessor(path, r.Current(), entries); err != nil {
					return nil, err
				}
			}
			l := &material.Loaded[[]*crlEntry]{Value: entries, Digest: sha256.Sum256(data), Files: []string{path}}
			for _, e := range entries {
				if nu := e.list.NextUpdate; !nu.IsZero() && (l.NotAfter.IsZero() || nu.Before(l.NotAfter)) {
					l.NotAfter = nu
				}
				if !e.list.NextUpdate.IsZero() && time.Now().After(e.list.NextUpdate) {
					logger.Warn("CRL is past its nextUpdate", zap.String("file", path),
						zap.String("issuer", e.list.Issuer.String()), material.TimeField("next_update", e.list.NextUpdate))
				}
			}
			return l, nil
		},
	})
	if err != nil {
		return nil, err
	}
	self.Store(f.Src)
	return f, nil
}

// parseCRLFile reads the CRLs of a file: PEM ("X509 CRL" blocks, several
// allowed) or one DER CRL.
func parseCRLFile(path string, data []byte, now time.Time) ([]*crlEntry, error) {
	lists, err := material.ParseCRLs(data)
	if err != nil {
		return nil, fmt.Errorf("crl %s: %w", path, err)
	}
	out := make([]*crlEntry, 0, len(lists))
	for _, l := range lists {
		out = append(out, newCRLEntry(path, l, now))
	}
	return out, nil
}

// checkSuccessor refuses a new version of a CRL file that steps back from
// the one in force: for each issuer the old version had a CRL of, the new
// CRL must not carry a lower CRL number, and must verify against the
// issuer certificate the old CRL was verified with during a handshake
// (when one was).
func checkSuccessor(path string, prev, next []*crlEntry) error {
	for _, n := range next {
		for _, p := range prev {
			if !bytes.Equal(p.list.RawIssuer, n.list.RawIssuer) {
				continue
			}
			if p.list.Number != nil && n.list.Number != nil && n.list.Number.Cmp(p.list.Number) < 0 {
				return fmt.Errorf("crl %s: the new CRL of %q has number %s, lower than %s in force: refusing to step back to an older CRL",
					path, n.list.Issuer, n.list.Number, p.list.Number)
			}
			if m := p.sig.Load(); m != nil && m.err == nil {
				issuer, err := x509.ParseCertificate(m.issuerRaw)
				if err == nil {
					if err := n.list.CheckSignatureFrom(issuer); err != nil {
						return fmt.Errorf("crl %s: the new CRL of %q is not signed by the issuer that signed the CRL in force: %v", path, n.list.Issuer, err)
					}
					n.sig.Store(m) // verified against the same issuer
				}
			}
		}
	}
	return nil
}
