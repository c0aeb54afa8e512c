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

// A CRL file is material like a truststore: a shared material.Reloadable
// (watched, shared across admin reloads, trustline_material_* metrics
// with kind "crl", the not-after gauge holding the earliest nextUpdate)
// that refuses a version that does not parse. A version that parses is
// handed, issuer by issuer, to the file's crlLines (successor.go).

// crlFile is one CRL file: its lines by issuer name (the CRLs' raw
// issuer).
type crlFile = material.Held[crlSnapshot]

type crlSnapshot map[string]*crlLine

// acquireCRLFile loads (or joins) the reloadable CRLs of path.
func acquireCRLFile(ctx caddy.Context, path string, logger *zap.Logger) (*crlFile, error) {
	// every issuer the file has held, and the last version read; Load
	// calls are serialized by the Reloadable
	lines := map[string]*crlLine{}
	var last *material.Loaded[crlSnapshot]
	f := new(crlFile)
	return f, f.Acquire(ctx, material.Spec[crlSnapshot]{
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
			entries, err := parseCRLFile(path, data)
			if err != nil {
				return nil, err
			}
			groups := map[string][]*crlEntry{}
			for _, e := range entries {
				groups[string(e.list.RawIssuer)] = append(groups[string(e.list.RawIssuer)], e)
				if e.expired(time.Now()) {
					logger.Warn("CRL is past its nextUpdate", zap.String("file", path),
						zap.String("issuer", e.list.Issuer.String()), material.TimeField("next_update", e.list.NextUpdate))
				}
			}
			snap := crlSnapshot{}
			for name, g := range groups {
				if lines[name] == nil {
					lines[name] = newCRLLine("file", path, logger)
				}
				lines[name].offer(g, nil)
				snap[name] = lines[name]
			}
			if last != nil {
				for name, l := range last.Value {
					if snap[name] == nil {
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
			last = l
			return l, nil
		},
	})
}

// parseCRLFile reads the CRLs of a file: PEM ("X509 CRL" blocks, several
// allowed) or one DER CRL.
func parseCRLFile(path string, data []byte) ([]*crlEntry, error) {
	lists, err := material.ParseCRLs(data)
	if err != nil {
		return nil, fmt.Errorf("crl %s: %w", path, err)
	}
	out := make([]*crlEntry, 0, len(lists))
	for _, l := range lists {
		out = append(out, newCRLEntry(path, l))
	}
	return out, nil
}
