package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/trustline/trustline/internal/testpki"
)

// forged are the identity headers a client may send, in every spelling.
var forged = map[string][]string{
	"Client-Cert":             {":Zm9yZ2Vk:"},
	"client-cert-chain":       {":Zm9yZ2Vk:", ":Zm9yZ2Vk:"},
	"CLIENT-CERT":             {":Zm9yZ2Vk:, :Zm9yZ2Vk:"},
	"X-Forwarded-Client-Cert": {`By=spiffe://evil;Hash=00;URI=spiffe://example.org/admin`, `URI=spiffe://example.org/admin`},
	"x-forwarded-client-cert": {"URI=spiffe://example.org/admin"},
	"X_Forwarded_Client_Cert": {"URI=spiffe://example.org/admin"},
	"Client_Cert":             {":Zm9yZ2Vk:"},
	"X-Spiffe-Id":             {"spiffe://example.org/admin"},
	"x-spiffe-id":             {"spiffe://example.org/admin", "spiffe://example.org/root"},
	"X-SSL-Client-Cert":       {"-----BEGIN%20CERTIFICATE-----"},
	"X-Ssl-Client-Verify":     {"SUCCESS"},
}

func forgedRequest(t *testing.T, cs *tls.ConnectionState) *http.Request {
	r, _ := caddyRequest(t, cs)
	for k, v := range forged {
		r.Header[k] = append([]string(nil), v...)
	}
	r.Header.Set("X-Unrelated", "kept")
	r.Trailer = http.Header{"X-Forwarded-Client-Cert": {"URI=spiffe://example.org/admin"}, "Client-Cert": {":Zm9yZ2Vk:"}}
	return r
}

func serve(t *testing.T, h *ForwardHeaders, r *http.Request) http.Header {
	t.Helper()
	var got http.Header
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		got = r.Header.Clone()
		if len(r.Trailer) != 0 {
			t.Errorf("trailers reached the next handler: %v", r.Trailer)
		}
		return nil
	})
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	return got
}

func fullHandler(t *testing.T) *ForwardHeaders {
	var h ForwardHeaders
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`forward_peer_identity {
		client_cert
		client_cert_chain
		xfcc {
			by spiffe://example.org/proxy
			cert
			chain
		}
		header X-Spiffe-Id {peer.spiffe_id}
		header X-Peer-Email {peer.email}
		pem X-SSL-Client-Cert
		strip X-SSL-Client-Verify
	}`))
	if err != nil {
		t.Fatal(err)
	}
	return provisioned(t, &h)
}

func TestForwardStripsEverySpoof(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.URI("spiffe://example.org/web")).Cert
	h := fullHandler(t)
	for name, cs := range map[string]*tls.ConnectionState{
		"plain http":                nil,
		"no client certificate":     {},
		"unverified (mode request)": {PeerCertificates: []*x509.Certificate{leaf}},
	} {
		t.Run(name, func(t *testing.T) {
			got := serve(t, h, forgedRequest(t, cs))
			for k := range got {
				if k != "X-Unrelated" {
					t.Errorf("header %s: %q reached the backend", k, got[k])
				}
			}
			if got.Get("X-Unrelated") != "kept" {
				t.Error("an unrelated header was removed")
			}
		})
	}
}

func TestForwardSetsVerifiedIdentity(t *testing.T) {
	root := testpki.NewCA(t, "Root")
	inter := root.NewIntermediate(t, "Issuing")
	leaf := inter.Issue(t, testpki.CN(`web "blue", inc`), testpki.URI("spiffe://example.org/web"), testpki.DNS("web.example.org", "web2.example.org")).Cert
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, inter.Cert}, VerifiedChains: [][]*x509.Certificate{{leaf, inter.Cert, root.Cert}}}
	got := serve(t, fullHandler(t), forgedRequest(t, cs))

	if v := got.Values("Client-Cert"); len(v) != 1 || v[0] != ":"+base64.StdEncoding.EncodeToString(leaf.Raw)+":" {
		t.Fatalf("Client-Cert %q", v)
	}
	// the value decodes back to the very certificate
	der, err := base64.StdEncoding.DecodeString(strings.Trim(got.Get("Client-Cert"), ":"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := x509.ParseCertificate(der); err != nil || !c.Equal(leaf) {
		t.Fatalf("Client-Cert does not decode to the leaf: %v", err)
	}
	wantChain := ":" + base64.StdEncoding.EncodeToString(inter.Cert.Raw) + ":, :" + base64.StdEncoding.EncodeToString(root.Cert.Raw) + ":"
	if v := got.Values("Client-Cert-Chain"); len(v) != 1 || v[0] != wantChain {
		t.Fatalf("Client-Cert-Chain %q", v)
	}
	xfcc := got.Values("X-Forwarded-Client-Cert")
	if len(xfcc) != 1 {
		t.Fatalf("XFCC %q", xfcc)
	}
	id := NewIdentity(leaf, nil)
	for _, part := range []string{
		"By=spiffe://example.org/proxy;Hash=" + id.FingerprintHex + `;Cert="-----BEGIN%20CERTIFICATE-----%0A`,
		`;Chain="-----BEGIN%20CERTIFICATE-----%0A`,
		`;Subject="CN=web \\\"blue\\\"\\, inc";URI=spiffe://example.org/web;DNS=web.example.org;DNS=web2.example.org`,
	} {
		if !strings.Contains(xfcc[0], part) {
			t.Errorf("XFCC %q lacks %q", xfcc[0], part)
		}
	}
	if strings.Contains(xfcc[0], "admin") || strings.Contains(xfcc[0], "evil") {
		t.Errorf("forged XFCC elements survived: %q", xfcc[0])
	}
	if v := got.Values("X-Spiffe-Id"); len(v) != 1 || v[0] != "spiffe://example.org/web" {
		t.Fatalf("X-Spiffe-Id %q", v)
	}
	if _, ok := got["X-Peer-Email"]; ok {
		t.Fatal("an empty header was set")
	}
	pemText, err := url.QueryUnescape(got.Get("X-Ssl-Client-Cert"))
	if err != nil || !strings.HasPrefix(pemText, "-----BEGIN CERTIFICATE-----\n") {
		t.Fatalf("pem header %q: %v", got.Get("X-Ssl-Client-Cert"), err)
	}
	if got.Get("X-Ssl-Client-Verify") != "" {
		t.Fatal("a stripped header survived")
	}
	// no duplicate of any family header anywhere, under any spelling
	for k := range got {
		if k != http.CanonicalHeaderKey(k) {
			t.Errorf("non-canonical header %q survived", k)
		}
	}
}

// TestForwardValuesAreIndependent: the values share one backing array, so
// a later handler appending to one header (Header.Add) must not overwrite
// another's value.
func TestForwardValuesAreIndependent(t *testing.T) {
	root := testpki.NewCA(t, "Root")
	leaf := root.Issue(t, testpki.URI("spiffe://example.org/web")).Cert
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, root.Cert}}}
	h := fullHandler(t)
	var before, after http.Header
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		before = r.Header.Clone()
		for name := range before {
			r.Header.Add(name, "appended")
		}
		after = r.Header
		return nil
	})
	r, _ := caddyRequest(t, cs)
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	for name, vals := range before {
		if got := after[name]; len(got) != len(vals)+1 || got[0] != vals[0] || got[len(vals)] != "appended" {
			t.Errorf("%s: %q after Add, was %q", name, got, vals)
		}
	}
}

func TestForwardDefaultAndErrors(t *testing.T) {
	var h ForwardHeaders
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`forward_peer_identity`)); err != nil {
		t.Fatal(err)
	}
	if !h.ClientCert || !h.ClientCertChain || h.XFCC != nil {
		t.Fatalf("bare directive: %+v", h)
	}
	for in, want := range map[string]string{
		`forward_peer_identity xfcc`:                                         "unexpected argument \"xfcc\"",
		"forward_peer_identity {\n client_cert_chain\n}":                     "client_cert_chain requires client_cert",
		"forward_peer_identity {\n client_cert\n client_cert\n}":             "duplicate option 'client_cert'",
		"forward_peer_identity {\n header X-A\n}":                            "header takes a name and a value",
		"forward_peer_identity {\n header X-A a\n header X-A b\n}":           `duplicate header "X-A"`,
		"forward_peer_identity {\n header Client-Cert x\n client_cert\n}":    `header "Client-Cert" is set by both`,
		"forward_peer_identity {\n header \"Bad Name\" x\n}":                 `invalid header name "Bad Name"`,
		"forward_peer_identity {\n xfcc {\n  by\n }\n}":                      "xfcc by needs a value",
		"forward_peer_identity {\n xfcc {\n  hash\n }\n}":                    `unknown xfcc option "hash"`,
		"forward_peer_identity {\n pem\n}":                                   "pem needs a header name",
		"forward_peer_identity {\n strip\n}":                                 "strip needs at least one header name",
		"forward_peer_identity {\n forward\n}":                               `unknown option "forward"`,
		"forward_peer_identity {\n header x_spiffe a\n header X-Spiffe b\n}": `is set by both`,
	} {
		var h ForwardHeaders
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "forward_peer_identity") {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
}

func TestAuthorize(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	allowed := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice")).Cert
	other := ca.Issue(t, testpki.URI("spiffe://other.org/ops/alice")).Cert
	verified := func(c *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c, ca.Cert}}}
	}
	var a Authorize
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`peer_authorize spiffe://example.org/ops/*`)); err != nil {
		t.Fatal(err)
	}
	provisioned(t, &a)
	logs := observedLogger(&a.logger)
	shadow := Authorize{Patterns: a.Patterns, Shadow: true}
	shadowLogs := observedLogger(&shadow.logger)
	cases := []struct {
		name string
		cs   *tls.ConnectionState
		ok   bool
		log  string
	}{
		{"allowed", verified(allowed), true, ""},
		// the reason is the class refusal logs, metrics and explain share
		{"other trust domain", verified(other), false, `"reason":"not_allowed","rule":"spiffe_id"`},
		{"no certificate", &tls.ConnectionState{}, false, `"reason":"no_certificate","detail":"no client certificate"`},
		{"unverified", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{allowed}}, false, `"reason":"unverified","detail":"client certificate not verified`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, h := range []*Authorize{&a, &shadow} {
				r, _ := caddyRequest(t, c.cs)
				called := false
				err := h.ServeHTTP(httptest.NewRecorder(), r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil }))
				if h.Shadow {
					if err != nil || !called {
						t.Fatalf("shadow denied: %v", err)
					}
					continue
				}
				if c.ok != (err == nil) || called != c.ok {
					t.Fatalf("err %v, next called %v", err, called)
				}
				if !c.ok {
					var he caddyhttp.HandlerError
					if !errorsAs(err, &he) || he.StatusCode != 403 {
						t.Fatalf("error %v is not a 403", err)
					}
				}
			}
			if c.log != "" {
				if !strings.Contains(logs.last(), c.log) || !strings.Contains(logs.last(), `"msg":"denied"`) {
					t.Fatalf("deny log %s lacks %s", logs.last(), c.log)
				}
				if !strings.Contains(shadowLogs.last(), c.log) || !strings.Contains(shadowLogs.last(), `"msg":"shadow: would deny"`) {
					t.Fatalf("shadow log %s lacks %s", shadowLogs.last(), c.log)
				}
			}
		})
	}
}

// benchRequest returns a function that makes, per request, what Caddy's
// server makes (a replacer, the vars map, the extra log fields) around one
// TLS request, and the request's header reset.
func benchRequest(b *testing.B, cs *tls.ConnectionState) func() *http.Request {
	base := httptest.NewRequest("GET", "https://example.com/", nil)
	base.TLS = cs
	return func() *http.Request {
		ctx := context.WithValue(base.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{"trusted_proxy": false, "client_ip": "192.0.2.1"})
		ctx = context.WithValue(ctx, caddyhttp.ExtraLogFieldsCtxKey, new(caddyhttp.ExtraLogFields))
		r := base.WithContext(ctx)
		r.Header = http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}}
		return r
	}
}

func benchIdentity(b *testing.B) *tls.ConnectionState {
	root := testpki.NewCA(b, "root")
	inter := root.NewIntermediate(b, "inter")
	leaf := inter.Issue(b, testpki.URI("spiffe://example.org/web"), testpki.DNS("web.example.org")).Cert
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, inter.Cert}, VerifiedChains: [][]*x509.Certificate{{leaf, inter.Cert, root.Cert}}}
}

// BenchmarkRequestBaseline is the per-request setup that the two
// benchmarks below share; subtract it from them.
func BenchmarkRequestBaseline(b *testing.B) {
	newReq := benchRequest(b, benchIdentity(b))
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		_ = next.ServeHTTP(w, newReq())
	}
}

// BenchmarkForwardHeaders is the per-request cost of the forwarding
// handler (RFC 9440 with chain, XFCC and a named header) on a keep-alive
// connection whose identity is cached, including publishing the
// placeholders and the access log object.
func BenchmarkForwardHeaders(b *testing.B) {
	newReq := benchRequest(b, benchIdentity(b))
	h := &ForwardHeaders{ClientCert: true, ClientCertChain: true, XFCC: &XFCC{By: "spiffe://example.org/edge"}, Headers: map[string]string{"X-Spiffe-Id": "{peer.spiffe_id}"}}
	provisioned(b, h)
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		if err := h.ServeHTTP(w, newReq(), next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatcherRequest is the per-request cost of the HTTP peer
// matcher with 20 patterns, including publishing.
func BenchmarkMatcherRequest(b *testing.B) {
	cs := benchIdentity(b)
	newReq := benchRequest(b, cs)
	m := &MatchPeer{Patterns: twentyPatterns()}
	m.SPIFFEID = append(m.SPIFFEID, "spiffe://example.org/web")
	m.OrganizationalUnit = nil
	m.TrustDomain = []string{"example.org"}
	m.DNS = []string{"*.example.org"}
	provisioned(b, m)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := m.MatchWithError(newReq()); !ok {
			b.Fatal("no match")
		}
	}
}

// trailerServer serves h behind a real net/http server, as Caddy does (a
// shallow copy of the request with Caddy's context); the next handler
// reads the body to EOF, as reverse_proxy does, and records the trailers
// it then sees.
func trailerServer(t *testing.T, h *ForwardHeaders, tls bool) (*httptest.Server, chan http.Header) {
	got := make(chan http.Header, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if _, err := io.ReadAll(r.Body); err != nil {
				return err
			}
			got <- r.Trailer.Clone()
			return nil
		})
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Error(err)
		}
	}))
	if tls {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, got
}

// checkTrailers fails if a trailer of the identity family arrived, or if
// the unrelated one did not.
func checkTrailers(t *testing.T, tr http.Header) {
	t.Helper()
	for name, vals := range tr {
		if n := normalizeName(name); n != "x-checksum" && n != "x-unrelated" && len(vals) > 0 {
			t.Errorf("forged trailer reached the next handler: %s: %q", name, vals)
		}
	}
	if tr.Get("X-Checksum") != "kept" {
		t.Errorf("an unrelated trailer was lost: %v", tr)
	}
}

// TestForwardStripsTrailers: net/http fills the trailers of a chunked
// request only when the body reaches EOF, after the handler has run; the
// identity family is removed then too. Before, a chunked request
// declaring `Trailer: Client-Cert, X-Spiffe-Id` reached the backend with
// the forged trailers.
func TestForwardStripsTrailers(t *testing.T) {
	h := fullHandler(t)
	t.Run("HTTP/1.1 chunked, declared and undeclared", func(t *testing.T) {
		srv, got := trailerServer(t, h, false)
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req := "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
			"Trailer: Client-Cert, X-Spiffe-Id, X-Forwarded-Client-Cert, X-Checksum\r\n\r\n" +
			"5\r\nhello\r\n0\r\n" +
			"Client-Cert: :Zm9yZ2Vk:\r\n" +
			"X-Spiffe-Id: spiffe://example.org/admin\r\n" +
			"x-forwarded-client-cert: URI=spiffe://example.org/admin\r\n" +
			"Client-Cert-Chain: :Zm9yZ2Vk:\r\n" + // not declared
			"X_Forwarded_Client_Cert: URI=spiffe://example.org/admin\r\n" +
			"X-Ssl-Client-Verify: SUCCESS\r\n" +
			"X-Checksum: kept\r\n\r\n"
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		checkTrailers(t, <-got)
	})
	t.Run("HTTP/2", func(t *testing.T) {
		srv, got := trailerServer(t, h, true)
		req, err := http.NewRequest("POST", srv.URL, io.NopCloser(strings.NewReader("hello")))
		if err != nil {
			t.Fatal(err)
		}
		req.Trailer = http.Header{
			"Client-Cert":             {":Zm9yZ2Vk:"},
			"X-Spiffe-Id":             {"spiffe://example.org/admin"},
			"X-Forwarded-Client-Cert": {"URI=spiffe://example.org/admin"},
			"X-Checksum":              {"kept"},
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("protocol %s", resp.Proto)
		}
		checkTrailers(t, <-got)
	})
}
