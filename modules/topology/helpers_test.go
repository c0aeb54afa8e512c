package topology

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestDeletes(t *testing.T) {
	for _, tc := range []struct {
		pattern, fam string
		want         bool
	}{
		{"*", "x-ssl-client-", true},
		{"x-ssl-client-*", "x-ssl-client-", true},
		{"x-ssl-*", "x-ssl-client-", true},
		{"x-ssl-client-dn", "x-ssl-client-", false}, // one header of the family only
		{"client-cert", "client-cert", true},
		{"client-cert*", "client-cert-chain", true},
		{"client-cert", "client-cert-chain", false},
		{"*-cert", "client-cert", true},
		{"*-cert", "x-ssl-client-", false},
		{"*client*", "x-ssl-client-", true},
		{"x-forwarded-for", "x-forwarded-client-cert", false},
	} {
		if got := deletes(tc.pattern, tc.fam); got != tc.want {
			t.Errorf("deletes(%q, %q) = %v, want %v", tc.pattern, tc.fam, got, tc.want)
		}
	}
}

func TestFamily(t *testing.T) {
	for name, want := range map[string]string{
		"X-Forwarded-Client-Cert": "x-forwarded-client-cert",
		"Client-Cert":             "client-cert",
		"Client-Cert-Chain":       "client-cert-chain",
		"X-SSL-Client-S-DN":       "x-ssl-client-",
		"X-Ssl-Client-Verify":     "x-ssl-client-",
		"X-Client-Verify":         "x-client-",
		"X-Forwarded-For":         "",
		"X-Client":                "",
		"Client-Certificate":      "",
	} {
		if got := family(name); got != want {
			t.Errorf("family(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestPortOf(t *testing.T) {
	for addr, want := range map[string]int{
		":443":             443,
		"127.0.0.1:8080":   8080,
		"[::1]:9443":       9443,
		"tcp/:80":          80,
		"tcp4/0.0.0.0:81":  81,
		":8000-8010":       8000,
		"unix//run/c.sock": -1,
		"localhost":        -1,
		"":                 -1,
		"{env.PORT}":       -1,
	} {
		if got := portOf(addr); got != want {
			t.Errorf("portOf(%q) = %d, want %d", addr, got, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for dial, want := range map[string]bool{
		"127.0.0.1:9000":      true,
		"127.8.9.1:80":        true,
		"localhost:8080":      true,
		"[::1]:80":            true,
		"unix//run/app.sock":  true,
		"tcp/127.0.0.1:80":    true,
		"10.0.0.1:80":         false,
		"backend.internal:80": false,
		"{upstream}":          false,
		"":                    false,
	} {
		if got := isLoopback(dial); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", dial, got, want)
		}
	}
}

func TestNameMatches(t *testing.T) {
	for _, tc := range []struct {
		subject, host string
		want          bool
	}{
		{"a.example.com", "A.example.com", true},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", "example.com", false},
		{"b.example.com", "a.example.com", false},
	} {
		if got := nameMatches(tc.subject, tc.host); got != tc.want {
			t.Errorf("nameMatches(%q, %q) = %v", tc.subject, tc.host, got)
		}
	}
}

func TestSelectPolicy(t *testing.T) {
	var pols []any
	if err := json.Unmarshal([]byte(`[{"match":{"sni":["a.test"]},"x":1},{"match":{"sni":["*.b.test"]},"x":2},{"x":3}]`), &pols); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]int{"a.test": 0, "c.b.test": 1, "other.test": 2, "": 2} {
		if i, _ := selectPolicy(pols, host); i != want {
			t.Errorf("selectPolicy(%q) = %d, want %d", host, i, want)
		}
	}
	if i, _ := selectPolicy(pols[:1], "z.test"); i != -1 {
		t.Errorf("no policy matches z.test, got %d", i)
	}
}

// TestGaugesOnePerLabelSet: two certificates with the same labels give
// one sample (a registry refuses duplicates), the earliest not-after; the
// suite's sources and certificates not read give none.
func TestGaugesOnePerLabelSet(t *testing.T) {
	t1, t2 := time.Unix(2000, 0), time.Unix(1000, 0)
	rep := &Report{Certificates: []*Certificate{
		{Role: RoleServer, Subject: "CN=a", Source: "file x", NotAfter: &t1},
		{Role: RoleServer, Subject: "CN=a", Source: "file x", NotAfter: &t2},
		{Role: RoleClient, Names: []string{"spiffe://td/x"}, Source: "file y", NotAfter: &t1},
		{Role: RoleTrustAnchor, Subject: "CN=ca", Source: "bundle z", Suite: true, NotAfter: &t1},
		{Role: RoleServer, Source: "managed", NotRead: "managed"},
	}}
	g := gauges(rep)
	if len(g) != 2 {
		t.Fatalf("gauges: %+v", g)
	}
	if g[0].value != 1000 || g[1].subject != "spiffe://td/x" {
		t.Errorf("gauges: %+v", g)
	}
}

// TestRunningReport: the report of the running config is the report of
// the config Caddy runs (read through caddyinternals.RunningConfig, whose
// own test pins the reach into Caddy).
func TestRunningReport(t *testing.T) {
	cfg := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"t":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"static_response","body":"x"}]}]}}}}}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Load([]byte(`{"admin":{"disabled":true}}`), true) })
	rep, err := runningReport()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Listeners) != 1 || rep.Listeners[0].Address != "127.0.0.1:0" {
		t.Errorf("report of the running config: %+v", rep.Listeners)
	}
}

func TestAnalyzeNotJSON(t *testing.T) {
	if _, err := Analyze([]byte("{not json"), Options{}); err == nil || !strings.Contains(err.Error(), "reading the config") {
		t.Errorf("error %v", err)
	}
}
