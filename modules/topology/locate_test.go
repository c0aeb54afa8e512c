package topology_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// TestLocateCaddyfile: findings of a report made from a Caddyfile point to
// the file and line their config comes from, an imported file's own name
// and line included; two directives of the same name are told apart by
// what they carry (the upstream, the header a message names).
func TestLocateCaddyfile(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Locate CA")
	cert, key := ca.Issue(t, testpki.DNS("a.example.test", "b.example.test")).WriteFiles(t, dir, "site")
	t.Setenv("LOC_CERT", cert)
	t.Setenv("LOC_KEY", key)
	missing := filepath.Join(dir, "missing-ca.pem")
	t.Setenv("LOC_MISSING", missing)
	imported := testpki.WriteFile(t, dir, "upstreams.caddy", []byte(`reverse_proxy https://10.9.9.9:9443 {
	transport http {
		tls_insecure_skip_verify
	}
}
`))
	caddyfile := testpki.WriteFile(t, dir, "Caddyfile", []byte(`{
	auto_https disable_redirects
}
https://a.example.test:8443 {
	tls {$LOC_CERT} {$LOC_KEY} {
		client_auth {
			mode request
		}
	}
	handle /one/* {
		reverse_proxy 10.0.0.1:8080
	}
	handle /two/* {
		reverse_proxy 10.0.0.2:8080 {
			header_up X-SSL-Client-DN {http.request.tls.client.subject}
			header_up +X-Forwarded-Client-Cert {http.request.tls.client.certificate_der_base64}
		}
	}
	handle /three/* {
		import upstreams.caddy
	}
}
https://b.example.test:9443 {
	tls {$LOC_CERT} {$LOC_KEY} {
		client_auth {
			trust_pool file {$LOC_MISSING}
		}
	}
	respond "b"
}
`))
	body, err := os.ReadFile(caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": caddyfile})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := topology.Analyze(cfg, topology.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.LocateCaddyfile(cfg, caddyfile, body); err != nil {
		t.Fatal(err)
	}
	at := func(line int) string { return caddyfile + ":" + itoa(line) }
	want := []struct{ kind, message, location string }{
		{topology.KindClientAuthNoVerify, "", at(7)},
		{topology.KindClientAuthOptional, "", at(7)},
		{topology.KindPlaintextLeg, "10.0.0.1:8080", at(11)},
		{topology.KindPlaintextLeg, "10.0.0.2:8080", at(14)},
		{topology.KindIdentityHeaders, "X-Forwarded-Client-Cert is added", at(16)},
		{topology.KindIdentityHeaders, "X-Ssl-Client-Dn is set", at(15)},
		{topology.KindInsecureSkipVerify, "", imported + ":3"},
		{topology.KindCertNotRead, missing, at(26)},
	}
	for _, w := range want {
		found := false
		for _, f := range rep.Findings {
			if f.Kind != w.kind || !contains(f.Message, w.message) {
				continue
			}
			found = true
			if f.Location != w.location {
				t.Errorf("%s (%s): location %q, want %q", f.Kind, f.Path, f.Location, w.location)
			}
		}
		if !found {
			t.Errorf("no finding %s with %q in %+v", w.kind, w.message, rep.Findings)
		}
	}
}

func contains(s, sub string) bool { return sub == "" || strings.Contains(s, sub) }

func itoa(i int) string { return strconv.Itoa(i) }
