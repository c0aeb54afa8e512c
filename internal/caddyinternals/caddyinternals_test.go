package caddyinternals

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/mholt/caddy-l4/layer4"
	_ "github.com/mholt/caddy-l4/modules/l4subroute"

	"github.com/trustline/trustline/internal/testcaddy"
)

// The probes record, at Provision, what this package's functions answer
// there; the tests provision a real config with Caddy's own code and
// check the answers. They guard the provisioning order these functions
// rely on (see each function) against a Caddy or caddy-l4 upgrade.

var (
	seenMu sync.Mutex
	seen   = map[string]string{}
)

func record(id, v string) {
	seenMu.Lock()
	defer seenMu.Unlock()
	seen[id] = v
}

type probeVerifier struct {
	ID string `json:"id"`
}

func (probeVerifier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "tls.client_auth.verifier.caddyinternals_probe", New: func() caddy.Module { return new(probeVerifier) }}
}

func (p *probeVerifier) Provision(ctx caddy.Context) error {
	pol := VerifierPolicy(ctx)
	if pol == nil {
		record(p.ID, "none")
		return nil
	}
	var names []string
	for _, raw := range pol.ClientAuthentication.VerifiersRaw {
		var v struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &v)
		names = append(names, v.ID)
	}
	record(p.ID, pol.TLSConfig.ClientAuth.String()+" pool="+boolString(pol.TLSConfig.ClientCAs != nil)+" verifiers="+strings.Join(names, ","))
	return nil
}

func (*probeVerifier) VerifyClientCertificate([][]byte, [][]*x509.Certificate) error { return nil }

type probeHandler struct {
	ID string `json:"id"`
}

func (probeHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.caddyinternals_probe", New: func() caddy.Module { return new(probeHandler) }}
}

func (p *probeHandler) Provision(ctx caddy.Context) error {
	r := CurrentRoute(ctx)
	if r == nil {
		record(p.ID, "none")
		return nil
	}
	hosts := RouteHosts(r)
	ask := "no client cert"
	for _, h := range hosts {
		if AsksClientCert(PolicyForHost(HTTPServer(ctx).TLSConnPolicies, h)) {
			ask = "client cert"
		}
	}
	record(p.ID, strings.Join(hosts, ",")+" "+ask)
	return nil
}

func (*probeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

type probeMatcher struct {
	ID string `json:"id"`
}

func (probeMatcher) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "layer4.matchers.caddyinternals_probe", New: func() caddy.Module { return new(probeMatcher) }}
}

func (p *probeMatcher) Provision(ctx caddy.Context) error {
	hosts := "no server"
	if srv := HTTPServer(ctx); srv != nil {
		hosts = strings.Join(ServerHosts(srv), ",")
	}
	route := "no route"
	if r := WrapperRoute(ctx); r != nil {
		route = fmt.Sprintf("%d sets", len(r.MatcherSetsRaw))
	}
	record(p.ID, route+" "+hosts)
	return nil
}

func (*probeMatcher) Match(*layer4.Connection) (bool, error) { return false, nil }

// ServerHosts returns the host names of every top-level route of srv.
func ServerHosts(srv *caddyhttp.Server) []string {
	var hosts []string
	for i := range srv.Routes {
		hosts = append(hosts, RouteHosts(&srv.Routes[i])...)
	}
	return hosts
}

func boolString(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func init() {
	caddy.RegisterModule(probeVerifier{})
	caddy.RegisterModule(probeHandler{})
	caddy.RegisterModule(probeMatcher{})
}

// TestProvisioningOrder provisions one config with Caddy's own code and
// checks what each function answered inside it.
func TestProvisioningOrder(t *testing.T) {
	cfg := `{
	"admin": {"disabled": true},
	"apps": {
		"http": {"servers": {"srv0": {
			"listen": ["127.0.0.1:0"],
			"automatic_https": {"disable": true},
			"listener_wrappers": [
				{"wrapper": "layer4", "routes": [
					{"match": [{"caddyinternals_probe": {"id": "wrapper-top"}}, {"caddyinternals_probe": {"id": "other"}}]},
					{"match": [{"caddyinternals_probe": {"id": "wrapper-second"}, "not": [{"caddyinternals_probe": {"id": "wrapper-not"}}]}]}
				]},
				{"wrapper": "tls"}
			],
			"routes": [
				{"match": [{"host": ["a.test"]}], "handle": [{"handler": "caddyinternals_probe", "id": "route-a"}]},
				{"match": [{"host": ["b.test"]}], "handle": [{"handler": "subroute", "routes": [
					{"handle": [{"handler": "caddyinternals_probe", "id": "route-b-nested"}]}
				]}]}
			],
			"errors": {"routes": [{"handle": [{"handler": "caddyinternals_probe", "id": "errors"}]}]},
			"tls_connection_policies": [
				{"match": {"sni": ["a.test"]}},
				{"match": {"sni": ["b.test"]}, "client_authentication": {"mode": "require", "verifiers": [
					{"verifier": "caddyinternals_probe", "id": "policy-b-1"},
					{"verifier": "caddyinternals_probe", "id": "policy-b-2"}
				]}},
				{"client_authentication": {"mode": "require_and_verify", "verifiers": [
					{"verifier": "caddyinternals_probe", "id": "policy-any"}
				]}}
			]
		}}},
		"layer4": {"servers": {"l4": {
			"listen": ["127.0.0.1:0"],
			"routes": [{"handle": [{"handler": "tls", "connection_policies": [
				{"client_authentication": {"mode": "request", "verifiers": [{"verifier": "caddyinternals_probe", "id": "l4"}]}}
			]}]}]
		}}}
	}
}`
	if _, err := testcaddy.Validate(t, []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"policy-b-1":     "RequireAnyClientCert pool=no verifiers=policy-b-1,policy-b-2",
		"policy-b-2":     "RequireAnyClientCert pool=no verifiers=policy-b-1,policy-b-2",
		"policy-any":     "RequireAndVerifyClientCert pool=no verifiers=policy-any",
		"l4":             "RequestClientCert pool=no verifiers=l4",
		"route-a":        "a.test no client cert",
		"route-b-nested": "b.test client cert",
		"errors":         " no client cert",
		"wrapper-top":    "2 sets a.test,b.test",
		"wrapper-second": "1 sets a.test,b.test",
		"wrapper-not":    "no route a.test,b.test",
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	for id, w := range want {
		if got := seen[id]; got != w {
			t.Errorf("%s: got %q, want %q (the provisioning order of Caddy %s, which this package relies on, changed?)", id, got, w, CaddyVersion)
		}
	}
}

// TestVersions names the Caddy and caddy-l4 versions the reaches were
// checked against (the ones go.mod pins): on an upgrade, re-read each
// function's note on what it relies on, run this package's tests, then
// update CaddyVersion or CaddyL4Version.
func TestVersions(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"github.com/caddyserver/caddy/v2": CaddyVersion, "github.com/mholt/caddy-l4": CaddyL4Version}
	for _, line := range strings.Split(string(mod), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, ok := want[f[0]]; ok {
			if f[1] != v {
				t.Errorf("go.mod pins %s %s; this package's reaches into it were checked against %s: re-read each function's note on what it relies on, run this package's tests, then update the version constant", f[0], f[1], v)
			}
			delete(want, f[0])
		}
	}
	for m := range want {
		t.Errorf("go.mod does not require %s", m)
	}
}
