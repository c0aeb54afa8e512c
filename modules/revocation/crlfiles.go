package revocation

import (
	"crypto/sha256"
	"fmt"
	"os"
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
// version that does not parse or holds no CRL is refused there, the last
// good one kept. One that parses is handed, issuer by issuer, to the
// file's crlLines, which apply the successor rule (successor.go): a CRL
// that may not succeed the one in force is refused, logged and counted,
// and the one in force stays, as does the CRL of an issuer the new version
// leaves out.

// crlFile is one CRL file's current CRLs.
type crlFile struct {
	material.Held[crlSnapshot]
}

// crlSnapshot is one version of a CRL file: its lines by issuer name
// (the CRLs' raw issuer).
type crlSnapshot map[string]*crlLine

func (f *crlFile) current() crlSnapshot { return f.Src.Current() }

// acquireCRLFile loads (or joins) the reloadable CRLs of path.
func acquireCRLFile(ctx caddy.Context, path string, logger *zap.Logger) (*crlFile, error) {
	// every issuer the file has held, and the last version read; Load
	// calls are serialized by the Reloadable
	lines := map[string]*crlLine{}
	var last *material.Loaded[crlSnapshot]
	f := new(crlFile)
	err := f.Acquire(ctx, material.Spec[crlSnapshot]{
		Kind:  "crl",
		Name:  path,
		Key:   "crl|" + path,
		Watch: []string{path},
		Load: func() (*material.Loaded[crlSnapshot], error) {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("crl %s: %w", path, err)
			}
			digest := sha256.Sum256(data)
			if last != nil && last.Digest == digest {
				return last, nil
			}
			entries, err := parseCRLFile(path, data, time.Now())
			if err != nil {
				return nil, err
			}
			groups := map[string][]*crlEntry{}
			for _, e := range entries {
				groups[string(e.list.RawIssuer)] = append(groups[string(e.list.RawIssuer)], e)
			}
			snap := crlSnapshot{}
			for name, g := range groups {
				l := lines[name]
				if l == nil {
					l = newCRLLine("file", path, logger)
					lines[name] = l
				}
				l.offer(g, nil)
				snap[name] = l
			}
			if last != nil {
				for name, l := range last.Value {
					if _, ok := snap[name]; !ok {
						l.missing()
						snap[name] = l
					}
				}
			}
			l := &material.Loaded[crlSnapshot]{Value: snap, Digest: digest, Files: []string{path}}
			for _, line := range snap {
				for _, e := range line.view.Load().entries {
					if nu := e.list.NextUpdate; !nu.IsZero() && (l.NotAfter.IsZero() || nu.Before(l.NotAfter)) {
						l.NotAfter = nu
					}
				}
			}
			for _, e := range entries {
				if !e.list.NextUpdate.IsZero() && time.Now().After(e.list.NextUpdate) {
					logger.Warn("CRL is past its nextUpdate", zap.String("file", path),
						zap.String("issuer", e.list.Issuer.String()), material.TimeField("next_update", e.list.NextUpdate))
				}
			}
			last = l
			return l, nil
		},
	})
	if err != nil {
		return nil, err
	}
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
