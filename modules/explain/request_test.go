package explain

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestParseRequestBounds: the admin API's input is bounded and holds
// certificates only; every refusal names the field and the reason.
func TestParseRequestBounds(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.CN("alice"), testpki.ClientOnly())
	body := func(v map[string]any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r, err := ParseRequest(body(map[string]any{"server_name": "API.example.com.", "chain": string(leaf.CertPEM())}))
	if err != nil {
		t.Fatal(err)
	}
	if r.ServerName != "api.example.com" || r.Method != "GET" || r.Path != "/" || len(r.certs) != 1 || len(r.ALPN) != 2 {
		t.Fatalf("defaults: %+v", r)
	}
	eleven := strings.Repeat(string(leaf.CertPEM()), MaxChainCerts+1)
	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"no server name":  {body(map[string]any{"chain": string(leaf.CertPEM())}), "server_name is required"},
		"a private key":   {body(map[string]any{"server_name": "a", "chain": string(leaf.CertPEM()) + string(leaf.KeyPEM())}), "never a key"},
		"11 certificates": {body(map[string]any{"server_name": "a", "chain": eleven}), "more than 10 certificates"},
		"a chain too big": {body(map[string]any{"server_name": "a", "chain": strings.Repeat("x", MaxChainBytes+1)}), "at most 65536"},
		"a body too big":  {make([]byte, MaxBodyBytes+1), "at most"},
		"not PEM":         {body(map[string]any{"server_name": "a", "chain": "hello"}), "no PEM block"},
		"a cut PEM":       {body(map[string]any{"server_name": "a", "chain": string(leaf.CertPEM())[:200]}), "chain:"},
		"unknown field":   {[]byte(`{"server_name":"a","key":"x"}`), "unknown field"},
		"two objects":     {[]byte(`{"server_name":"a"}{}`), "after the JSON object"},
		"a bad method":    {body(map[string]any{"server_name": "a", "method": "get"}), "method"},
		"a bad path":      {body(map[string]any{"server_name": "a", "path": "admin"}), "must start with /"},
		"a control char":  {body(map[string]any{"server_name": "a\nb"}), "not a host name"},
		"a bad remote ip": {body(map[string]any{"server_name": "a", "remote_ip": "x"}), "not an IP address"},
		"a bad ALPN":      {body(map[string]any{"server_name": "a", "alpn": []string{""}}), "alpn"},
	} {
		if _, err := ParseRequest(tc.body); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// FuzzParseRequest feeds the parser of POST /trustline/explain (JSON and
// the PEM chain in it): it never panics, and what it accepts is within
// the bounds.
func FuzzParseRequest(f *testing.F) {
	ca := testpki.NewCA(f, "root")
	leaf := ca.Issue(f, testpki.CN("alice"), testpki.ClientOnly())
	seed, _ := json.Marshal(map[string]any{"server_name": "api.example.com", "listen": ":8443", "chain": string(leaf.CertPEM()) + string(ca.CertPEM()), "path": "/admin", "method": "POST", "alpn": []string{"h2"}})
	f.Add(seed)
	f.Add([]byte(`{"server_name":"a","upstream":"127.0.0.1:9443"}`))
	f.Add([]byte(`{"server_name":"a","chain":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`{"server_name":"a","chain":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRequest(data)
		if err != nil {
			return
		}
		if len(r.certs) > MaxChainCerts || len(r.Chain) > MaxChainBytes || (r.ServerName == "" && r.Upstream == "") || r.Method == "" || !strings.HasPrefix(r.Path, "/") {
			t.Fatalf("accepted out of bounds: %+v", r)
		}
	})
}
