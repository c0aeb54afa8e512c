package caddyinternals

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// probeTransport answers every request itself, recording the h1-only
// variable of the request reverse_proxy hands it.
type probeTransport struct{ h1Only chan any }

func (probeTransport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.reverse_proxy.transport.caddyinternals_probe", New: func() caddy.Module { return &probeTransport{h1Only: probeH1Only} }}
}

var probeH1Only = make(chan any, 4)

func (p *probeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	p.h1Only <- caddyhttp.GetVar(r.Context(), ReverseProxyH1OnlyVar)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

func init() { caddy.RegisterModule(probeTransport{}) }

// TestReverseProxyH1OnlyVar: Caddy's reverse_proxy sets
// ReverseProxyH1OnlyVar (its unexported tlsH1OnlyVarKey) to true on the
// request it hands its transport for a WebSocket upgrade, and leaves it
// unset otherwise.
func TestReverseProxyH1OnlyVar(t *testing.T) {
	storage, _ := json.Marshal(map[string]string{"module": "file_system", "root": t.TempDir()})
	ctx, err := caddy.ProvisionContext(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}, StorageRaw: storage})
	if err != nil {
		t.Fatal(err)
	}
	h := &reverseproxy.Handler{
		TransportRaw: json.RawMessage(`{"protocol":"caddyinternals_probe"}`),
		Upstreams:    reverseproxy.UpstreamPool{{Dial: "127.0.0.1:1"}},
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	for _, upgrade := range []bool{true, false} {
		r := httptest.NewRequest(http.MethodGet, "http://a.test/", nil)
		if upgrade {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		w := httptest.NewRecorder()
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, new(caddyhttp.Server))
		if err := h.ServeHTTP(w, r, nil); err != nil {
			t.Fatal(err)
		}
		if got := <-probeH1Only; (got == true) != upgrade {
			t.Errorf("Caddy %s's reverse_proxy: the request variable %q is %v for a request with upgrade=%v: its tlsH1OnlyVarKey changed?", CaddyVersion, ReverseProxyH1OnlyVar, got, upgrade)
		}
	}
}
