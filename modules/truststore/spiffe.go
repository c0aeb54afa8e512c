package truststore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trustline/trustline/internal/misplaced"
	"github.com/trustline/trustline/modules/material"
	"github.com/trustline/trustline/modules/verify"
)

func init() {
	caddy.RegisterModule(SPIFFEBundle{})
}

// SPIFFEBundle trusts the X.509 authorities of SPIFFE trust bundles (JWKS),
// read from files (watched) or fetched from HTTPS bundle endpoints
// (https_web profile) and refreshed at the bundle's refresh hint.
type SPIFFEBundle struct {
	// Bundles lists the trust domains and where their bundles come from.
	// At least one is required.
	Bundles []SPIFFEBundleSource `json:"bundles,omitempty"`
	// DefaultRefresh is how often an endpoint is fetched again when its
	// bundle carries no refresh hint. Default: 5m.
	DefaultRefresh caddy.Duration `json:"default_refresh,omitempty"`

	livePool
}

// SPIFFEBundleSource is where one trust domain's bundle comes from: a file
// or an endpoint URL (exactly one).
type SPIFFEBundleSource struct {
	// TrustDomain the bundle belongs to, e.g. "example.org". Required.
	TrustDomain string `json:"trust_domain,omitempty"`
	// File holding the bundle (JWKS).
	File string `json:"file,omitempty"`
	// URL of an HTTPS bundle endpoint (https_web profile).
	URL string `json:"url,omitempty"`
	// EndpointCA is a PEM file of CAs that verify the endpoint's server
	// certificate. Default: the system roots.
	EndpointCA string `json:"endpoint_ca,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (SPIFFEBundle) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.ca_pool.source.spiffe_bundle",
		New: func() caddy.Module { return new(SPIFFEBundle) },
	}
}

// Provision reads every bundle now (an error fails the config load) and
// keeps them current.
func (s *SPIFFEBundle) Provision(ctx caddy.Context) error {
	if len(s.Bundles) == 0 {
		return fmt.Errorf("spiffe_bundle: at least one bundle is required")
	}
	if s.DefaultRefresh == 0 {
		s.DefaultRefresh = caddy.Duration(5 * time.Minute)
	}
	var files, names []string
	remote := false
	tds := make([]spiffeid.TrustDomain, len(s.Bundles))
	for i, b := range s.Bundles {
		td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
		if err != nil {
			return fmt.Errorf("spiffe_bundle: trust domain %q: %w", b.TrustDomain, err)
		}
		tds[i] = td
		switch {
		case (b.File == "") == (b.URL == ""):
			return fmt.Errorf("spiffe_bundle: trust domain %s needs exactly one of file or url", td)
		case b.File != "":
			files = append(files, b.File)
			names = append(names, td.String()+"="+b.File)
		default:
			if !strings.HasPrefix(b.URL, "https://") {
				return fmt.Errorf("spiffe_bundle: trust domain %s: the endpoint must be an https:// URL, got %q", td, b.URL)
			}
			remote = true
			names = append(names, td.String()+"="+b.URL)
		}
	}
	logger := ctx.Logger()
	name := strings.Join(names, " ")
	spec := material.Spec[*verify.Anchors]{
		Kind:  "spiffe_bundle",
		Name:  name,
		Key:   fmt.Sprintf("spiffe_bundle|%+v|%v", s.Bundles, s.DefaultRefresh),
		Watch: files,
		Load: func() (*material.Loaded[*verify.Anchors], error) {
			var domains []verify.Domain
			h := sha256.New()
			var refresh time.Duration
			for i, b := range s.Bundles {
				bundle, err := s.read(tds[i], b)
				if err != nil {
					return nil, fmt.Errorf("trust domain %s: %w", tds[i].Name(), err)
				}
				auth := bundle.X509Authorities()
				if len(auth) == 0 {
					return nil, fmt.Errorf("trust domain %s: the bundle has no X.509 authorities", tds[i].Name())
				}
				h.Write([]byte(tds[i].Name() + "\x00"))
				for _, c := range auth {
					h.Write(c.Raw)
				}
				if err := checkAnchors(auth, logger, tds[i].String()); err != nil {
					return nil, fmt.Errorf("trust domain %s: %w", tds[i].Name(), err)
				}
				domains = append(domains, verify.Domain{TrustDomain: tds[i], Authorities: auth, Origin: cmp.Or(b.File, b.URL)})
				if b.URL != "" {
					hint := time.Duration(s.DefaultRefresh)
					if rh, ok := bundle.RefreshHint(); ok && rh > 0 {
						hint = max(rh, 5*time.Second)
					}
					if refresh == 0 || hint < refresh {
						refresh = hint
					}
				}
			}
			// each authority vouches for its own trust domain's SVIDs only
			a, err := verify.NewSPIFFEAnchors(domains)
			if err != nil {
				return nil, err
			}
			l := loadedAnchors(a, [32]byte(h.Sum(nil)), nil)
			l.Refresh = refresh
			return l, nil
		},
	}
	if remote && len(files) == 0 {
		// no files to watch: only the refresh hint drives reloads
		spec.Poll = 24 * time.Hour
	}
	if err := s.Acquire(ctx, spec); err != nil {
		return fmt.Errorf("loading spiffe_bundle: %w", err)
	}
	return nil
}

func (s *SPIFFEBundle) read(td spiffeid.TrustDomain, b SPIFFEBundleSource) (*spiffebundle.Bundle, error) {
	if b.File != "" {
		return spiffebundle.Load(td, b.File)
	}
	var opts []federation.FetchOption
	if b.EndpointCA != "" {
		data, err := os.ReadFile(b.EndpointCA)
		if err != nil {
			return nil, fmt.Errorf("endpoint_ca: %w", err)
		}
		certs, err := material.ParsePEMCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("endpoint_ca %s: %w", b.EndpointCA, err)
		}
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		opts = append(opts, federation.WithWebPKIRoots(pool))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return federation.FetchBundle(ctx, td, b.URL, opts...)
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	trust_pool spiffe_bundle {
//		bundle   <trust_domain> <file>
//		endpoint <trust_domain> <https_url> [<endpoint_ca_pem>]
//		default_refresh <duration>
//	}
func (s *SPIFFEBundle) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		return d.Errf("spiffe_bundle: unexpected argument %q (bundles go in a block)", d.Val())
	}
	seenTD := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		switch opt {
		case "bundle", "endpoint":
			if len(args) < 2 || (opt == "bundle" && len(args) != 2) || len(args) > 3 {
				if opt == "bundle" {
					return d.Err("spiffe_bundle: bundle takes <trust_domain> <file>")
				}
				return d.Err("spiffe_bundle: endpoint takes <trust_domain> <https_url> [<endpoint_ca_pem>]")
			}
			if _, err := spiffeid.TrustDomainFromString(args[0]); err != nil {
				return d.Errf("spiffe_bundle: bad trust domain %q: %v", args[0], err)
			}
			if seenTD[args[0]] {
				return d.Errf("spiffe_bundle: duplicate trust domain %q", args[0])
			}
			seenTD[args[0]] = true
			src := SPIFFEBundleSource{TrustDomain: args[0]}
			if opt == "bundle" {
				src.File = args[1]
			} else {
				src.URL = args[1]
				if len(args) == 3 {
					src.EndpointCA = args[2]
				}
			}
			s.Bundles = append(s.Bundles, src)
		case "default_refresh":
			if len(args) != 1 {
				return d.Err("spiffe_bundle: default_refresh takes one duration")
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("spiffe_bundle: bad default_refresh %q", args[0])
			}
			s.DefaultRefresh = caddy.Duration(dur)
		default:
			return d.Errf("spiffe_bundle: unknown option '%s' (expected bundle, endpoint or default_refresh)%s", opt, misplaced.Hint(opt))
		}
	}
	if len(s.Bundles) == 0 {
		return d.Err("spiffe_bundle: at least one bundle or endpoint is required")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner            = (*SPIFFEBundle)(nil)
	_ caddy.CleanerUpper           = (*SPIFFEBundle)(nil)
	_ caddyfile.Unmarshaler        = (*SPIFFEBundle)(nil)
	_ caddytls.CA                  = (*SPIFFEBundle)(nil)
	_ caddytls.CertificateProvider = (*SPIFFEBundle)(nil)
)
