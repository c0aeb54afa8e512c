package tlsclient

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// parseTLSBlock parses `tls { ... }` and `tls_<setting>` lines as the
// passthrough handler does: the block's options under "x: tls", the
// tls_* forms under "x".
func parseTLSBlock(in string) (*Options, error) {
	d := caddyfile.NewTestDispenser("x {\n" + in + "\n}")
	d.Next()
	var o Options
	for d.NextBlock(0) {
		opt := d.Val()
		if opt == "tls" {
			for d.NextBlock(1) {
				if err := o.ParseOption(d, "x: tls", d.Val(), "tls "+d.Val()); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := o.ParseOption(d, "x", strings.TrimPrefix(opt, "tls_"), opt); err != nil {
			return nil, err
		}
	}
	return &o, nil
}

func TestOptions(t *testing.T) {
	o, err := parseTLSBlock("tls {\nclient_identity pem /a.crt /a.key\nupstream_identity spiffe://td/db db.internal\n}\ntls_trust_pool file /ca.pem\ntls_server_name db.internal")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(o.ClientIdentityRaw); got != `{"certificate":"/a.crt","key":"/a.key","source":"pem"}` {
		t.Errorf("client identity %s", got)
	}
	if got := string(o.TrustPool); got != `{"pem_files":["/ca.pem"],"provider":"file"}` {
		t.Errorf("trust pool %s", got)
	}
	if o.TrustPoolLine != 6 {
		t.Errorf("trust pool line %d, want 6", o.TrustPoolLine)
	}
	if strings.Join(o.UpstreamIdentity, " ") != "spiffe://td/db db.internal" || o.ServerName != "db.internal" {
		t.Errorf("pins %q, server name %q", o.UpstreamIdentity, o.ServerName)
	}

	for _, tc := range []struct{ in, want string }{
		{"tls {\nserver_name a\nserver_name b\n}", "x: tls: duplicate option 'server_name', at Testfile:4"},
		{"tls {\nserver_name a\n}\ntls_server_name b", "x: server_name given twice (as tls server_name and as tls_server_name): give it once, at Testfile:5"},
		{"tls_trust_pool file /a\ntls {\ntrust_pool file /b\n}", "x: tls: trust_pool given twice (as tls_trust_pool and as tls trust_pool): give it once, at Testfile:4"},
		{"tls {\nserver_name\n}", "x: tls: server_name takes exactly one value, got 0, at Testfile:3"},
		{"tls {\nupstream_identity\n}", "x: tls: upstream_identity needs at least one SPIFFE ID (spiffe://td/path), trust domain (spiffe://td) or DNS name, at Testfile:3"},
		{"tls {\nupstream_identity https://db\n}", `x: tls: upstream_identity "https://db": expected a SPIFFE ID`},
		{"tls {\nclient_identity p13 /x\n}", "x: tls: client_identity: unknown keystore source 'p13' (expected one of: "},
		{"tls {\ntrust_pool nope\n}", "x: tls: trust_pool: unknown trust pool source 'nope' (expected one of: "},
		{"tls_trust_pool", "x: tls_trust_pool: expected a trust pool source ("},
		// the source's own error, its line once, after where
		{"tls {\ntrust_pool truststore\n}", "x: tls: trust_pool: truststore: expected the path of a JKS or PKCS#12 file, at Testfile:3"},
		{"tls {\nclient_auth /a /b\n}", "x: tls: unknown option 'client_auth' (expected client_identity, upstream_identity, trust_pool or server_name), at Testfile:3"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := parseTLSBlock(tc.in)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant %q...", err, tc.want)
			}
			if strings.Count(err.Error(), ", at Testfile:") != 1 {
				t.Errorf("error %q: want the line once", err)
			}
		})
	}
}

// FuzzTLSOptions feeds arbitrary tls blocks to the one parser of the
// upstream TLS settings (and through it to the keystore and trust pool
// sources' parsers): it must return an error or options, never panic.
func FuzzTLSOptions(f *testing.F) {
	for _, s := range []string{
		"tls {\nclient_identity pem /a.crt /a.key\nupstream_identity spiffe://td/db\ntrust_pool file /ca.pem\nserver_name db\n}",
		"tls_server_name a\ntls {\nserver_name b\n}",
		"tls {\ntrust_pool truststore /t.jks {\npassword {env.P}\n}\n}",
		"tls {\nclient_identity jks /k.jks {\nalias a\n}\n}",
		"tls {\nupstream_identity\n}",
		"tls_trust_pool",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := caddyfile.Tokenize([]byte("x {\n"+s+"\n}"), "Caddyfile"); err != nil {
			return
		}
		_, _ = parseTLSBlock(s)
	})
}

func FuzzParsePins(f *testing.F) {
	for _, s := range []string{"spiffe://example.org/backend", "spiffe://example.org", "backend.test", "https://x", "", "spiffe://", "SPIFFE://A/b", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePins([]string{s})
		if err == nil && p.empty() {
			t.Fatalf("%q parsed to no pin without an error", s)
		}
	})
}
