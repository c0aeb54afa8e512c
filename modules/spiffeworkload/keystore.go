package spiffeworkload

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/trustline/trustline/modules/keystore"
	"github.com/trustline/trustline/modules/material"
)

func init() {
	caddy.RegisterModule(Keystore{})
}

// Keystore is the workload's X509-SVID and its private key, from the
// SPIFFE Workload API (a SPIRE agent). Rotations the agent streams are in
// force for the next handshake. When the agent goes away, the last SVID
// stays in force until it expires (logged past half its life, and once
// expired) and the connection is retried with backoff (100ms up to 5s).
type Keystore struct {
	// SPIFFEID picks the SVID with this ID when the agent gives the
	// workload several, e.g. `spiffe://example.org/proxy`. Default: the
	// first SVID the agent serves (the Workload API's default identity).
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// Usage is the extended key usage the SVID must allow: client_auth,
	// server_auth or any. Set by the directive that uses the keystore.
	// Default: any.
	Usage string `json:"usage,omitempty"`
	Agent

	material.Held[*tls.Certificate]
}

// CaddyModule returns the Caddy module information.
func (Keystore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  keystore.Namespace + ".spiffe_workload",
		New: func() caddy.Module { return new(Keystore) },
	}
}

// Provision connects to the agent (or joins the connection another
// module holds), waits up to Wait for the SVID, and follows its rotations.
func (k *Keystore) Provision(ctx caddy.Context) error {
	addr, err := socketAddress(k.Socket, k.InsecureTCP)
	if err != nil {
		return fmt.Errorf("keystore spiffe_workload: %w", err)
	}
	var id spiffeid.ID
	if k.SPIFFEID != "" {
		if id, err = spiffeid.FromString(k.SPIFFEID); err != nil {
			return fmt.Errorf("keystore spiffe_workload: spiffe_id %q: %w", k.SPIFFEID, err)
		}
	}
	usage, err := keystore.ParseUsage(k.Usage)
	if err != nil {
		return fmt.Errorf("keystore spiffe_workload: %w", err)
	}
	load := func(x *workloadapi.X509Context) (*material.Loaded[*tls.Certificate], error) {
		svid, err := pickSVID(x, id)
		if err != nil {
			return nil, fmt.Errorf("the agent at %s: %w", addr, err)
		}
		cert, err := identity(svid, usage)
		if err != nil {
			return nil, fmt.Errorf("the agent at %s: %w", addr, err)
		}
		return &material.Loaded[*tls.Certificate]{Value: cert, Certificates: svid.Certificates, Digest: digestOf(cert.Certificate)}, nil
	}
	// one name per usage: two sources of one name would be two series
	// with the same labels, which fails the whole /metrics scrape
	name := addr + " " + cmp.Or(k.SPIFFEID, "default_svid") + " " + string(usage)
	err = provision(ctx, &k.Agent, &k.Held, addr, load, material.Spec[*tls.Certificate]{
		Kind: "keystore",
		Name: "spiffe_workload " + name,
		Key:  "keystore|spiffe_workload|" + addr + "|" + k.SPIFFEID + "|" + string(usage),
	}, &follower{
		StaleSource: StaleSource{Source: "keystore spiffe_workload " + name},
		maxStale:    time.Duration(k.MaxStale),
		notAfter:    func() time.Time { return k.Src.Current().Leaf.NotAfter },
	})
	if err != nil {
		return fmt.Errorf("keystore spiffe_workload: %w", err)
	}
	return nil
}

// KeyPair returns the current SVID and key (lock-free); it implements
// keystore.Source. Never nil once provisioned, even after Cleanup.
func (k *Keystore) KeyPair() *tls.Certificate { return k.Src.Current() }

// OnChange runs f after each rotation; it implements keystore.Source.
func (k *Keystore) OnChange(f func()) (cancel func()) { return k.Src.OnChange(f) }

// Name is the source's name in logs and metrics (keystore.Source).
func (k *Keystore) Name() string { return k.Src.Name() }

// Cleanup stops following the agent; the last module using the socket
// closes the connection.
func (k *Keystore) Cleanup() error {
	k.release()
	k.Release()
	return nil
}

// pickSVID is the SVID with ID id, or the default (first) one when id is
// zero.
func pickSVID(x *workloadapi.X509Context, id spiffeid.ID) (*x509svid.SVID, error) {
	if x == nil || len(x.SVIDs) == 0 {
		return nil, errors.New("no X509-SVID yet")
	}
	if id.IsZero() {
		return x.SVIDs[0], nil
	}
	ids := make([]string, 0, len(x.SVIDs))
	for _, s := range x.SVIDs {
		if s.ID == id {
			return s, nil
		}
		ids = append(ids, s.ID.String())
	}
	return nil, fmt.Errorf("no X509-SVID for %s (the workload has: %s)", id, strings.Join(ids, ", "))
}

// identity builds the tls.Certificate of an SVID (leaf first, then the
// intermediates the agent sent), checking it allows usage.
func identity(s *x509svid.SVID, usage keystore.Usage) (*tls.Certificate, error) {
	if len(s.Certificates) == 0 || s.PrivateKey == nil {
		return nil, fmt.Errorf("X509-SVID %s has no certificate or key", s.ID)
	}
	leaf := s.Certificates[0]
	if err := keystore.CheckUsage(leaf, usage); err != nil {
		return nil, fmt.Errorf("X509-SVID %s: %w", s.ID, err)
	}
	return &tls.Certificate{Certificate: raws(s.Certificates), PrivateKey: s.PrivateKey, Leaf: leaf}, nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens.
//
// Syntax:
//
//	... spiffe_workload [<spiffe_id>] {
//		socket       unix:///run/spire/agent.sock
//		wait         <duration>
//		max_stale    <duration>
//		insecure_tcp
//	}
func (k *Keystore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // source name
	if d.NextArg() {
		if _, err := spiffeid.FromString(d.Val()); err != nil {
			return d.Errf("keystore spiffe_workload: bad SPIFFE ID %q: %v", d.Val(), err)
		}
		k.SPIFFEID = d.Val()
		if d.NextArg() {
			return d.Errf("keystore spiffe_workload: unexpected argument %q (one SPIFFE ID at most)", d.Val())
		}
	}
	return parseAgentBlock(d, "keystore spiffe_workload", &k.Agent, nil)
}

// Agent are the Workload API settings both modules share.
type Agent struct {
	// Socket is the Workload API address: `unix:///path` or
	// `tcp://ip:port`. Default: the SPIFFE_ENDPOINT_SOCKET environment
	// variable.
	Socket string `json:"socket,omitempty"`
	// Wait is how long the config load waits for the agent to answer with
	// the SVID or the bundles (for a pod whose agent starts beside it).
	// Default: 0, an unreachable agent, a missing SVID or trust domain
	// fails the load at once.
	Wait caddy.Duration `json:"wait,omitempty"`
	// InsecureTCP allows a tcp:// socket to a non-loopback address: the
	// Workload API is plaintext, unauthenticated gRPC, so whoever is on the
	// path reads the SVIDs' keys and can answer with SVIDs and bundles of
	// their own (a warning is logged). Default: false (tcp:// to loopback
	// only).
	InsecureTCP bool `json:"insecure_tcp,omitempty"`
	// MaxStale is how long the agent may be unreachable before the last
	// answer counts as stale (a warning, the stale gauge, a topology
	// finding; it stays in force, an SVID until it expires). Default: 24h
	// for a trust pool; none for a keystore, whose SVID counts stale once
	// it has expired.
	MaxStale caddy.Duration `json:"max_stale,omitempty"`

	addr     string // the module's hold on the connection (provision)
	agent    *agent
	unfollow func()
}

// parseAgentBlock parses the block both modules share, each option once.
// A tcp:// socket to another host without insecure_tcp is refused here
// already.
func parseAgentBlock(d *caddyfile.Dispenser, what string, b *Agent, trustDomains *[]string) error {
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s: duplicate option '%s'", what, opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		switch {
		case opt == "socket":
			if len(args) != 1 {
				return d.Err("spiffe_workload: socket takes one address (unix:///path or tcp://ip:port)")
			}
			if err := workloadapi.ValidateAddress(args[0]); err != nil {
				return d.Errf("spiffe_workload: bad socket %q: %v", args[0], err)
			}
			b.Socket = args[0]
		case opt == "wait" || opt == "max_stale":
			if len(args) != 1 {
				return d.Errf("spiffe_workload: %s takes one duration", opt)
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur < 0 {
				return d.Errf("spiffe_workload: bad %s %q", opt, args[0])
			}
			if opt == "wait" {
				b.Wait = caddy.Duration(dur)
			} else if dur == 0 {
				return d.Err("spiffe_workload: max_stale must be positive")
			} else {
				b.MaxStale = caddy.Duration(dur)
			}
		case opt == "insecure_tcp":
			if len(args) > 0 {
				return d.Err("spiffe_workload: insecure_tcp takes no argument")
			}
			b.InsecureTCP = true
		case opt == "trust_domains" && trustDomains != nil:
			if len(args) == 0 {
				return d.Errf("%s: trust_domains takes one or more trust domains", what)
			}
			for _, s := range args {
				td, err := trustDomain(s)
				if err != nil {
					return d.Errf("%s: bad trust domain %q: %v", what, s, err)
				}
				if slices.Contains(*trustDomains, td.Name()) {
					return d.Errf("%s: duplicate trust domain %q", what, s)
				}
				*trustDomains = append(*trustDomains, td.Name())
			}
		default:
			expected := "socket, wait, max_stale or insecure_tcp"
			if trustDomains != nil {
				expected = "socket, trust_domains, wait, max_stale or insecure_tcp"
			}
			return d.Errf("%s: unknown option '%s' (expected %s)", what, opt, expected)
		}
	}
	if err := checkTCP(b.Socket, b.InsecureTCP); err != nil {
		return d.Errf("%s: %v", what, err)
	}
	return nil
}

// Interface guards
var (
	_ keystore.Source       = (*Keystore)(nil)
	_ caddy.Provisioner     = (*Keystore)(nil)
	_ caddy.CleanerUpper    = (*Keystore)(nil)
	_ caddyfile.Unmarshaler = (*Keystore)(nil)
)
