package integration

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trustline/trustline/integration/bench"
)

// trailerEcho is a backend that reads the whole body, then answers with
// the trailers it got (net/http fills them in at the end of the body).
func trailerEcho(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"body": string(body), "trailer": r.Trailer, "header": r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv
}

type trailerEchoAnswer struct {
	Body    string      `json:"body"`
	Trailer http.Header `json:"trailer"`
	Header  http.Header `json:"header"`
}

// forgedTrailers are identity headers sent as trailers: the first three
// declared in the Trailer header, the others not (HTTP/1.1 delivers
// undeclared trailers too).
const forgedTrailers = "Client-Cert: :Zm9yZ2Vk:\r\n" +
	"X-Spiffe-Id: spiffe://example.org/admin\r\n" +
	"x-forwarded-client-cert: URI=spiffe://example.org/admin\r\n" +
	"Client-Cert-Chain: :Zm9yZ2Vk:\r\n" +
	"X_Forwarded_Client_Cert: URI=spiffe://example.org/root\r\n" +
	"X-Legacy-Verify: SUCCESS\r\n" +
	"X-Checksum: kept\r\n"

// TestPeerTrailersNotForwarded sends the identity family as request
// trailers through the real binary to a backend behind reverse_proxy:
// forward_peer_identity removes them at the end of the body, where
// net/http fills trailers in, over HTTP/1.1 (chunked) and HTTP/2, with a
// verified client and with none. An unrelated trailer still arrives, so
// the backend does see trailers.
func TestPeerTrailersNotForwarded(t *testing.T) {
	p := newPeerPKI(t)
	backend := trailerEcho(t)
	verified, request := bench.FreeAddr(t), bench.FreeAddr(t)
	bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
(forward) {
	forward_peer_identity {
		client_cert
		client_cert_chain
		xfcc
		header X-Spiffe-Id {peer.spiffe_id}
		strip X-Legacy-Verify
	}
	reverse_proxy %[6]s
}
https://localhost:%[1]s {
	tls %[3]s %[4]s {
		client_auth {
			trust_pool file %[5]s
		}
	}
	import forward
}
https://localhost:%[2]s {
	tls %[3]s %[4]s {
		client_auth {
			mode request
		}
	}
	import forward
}
`, bench.Port(verified), bench.Port(request), p.srvCert, p.srvKey, p.rootFile, backend.Listener.Addr().String()))

	alice := p.leaves["alice"].TLS()
	tlsConfig := func(withCert bool, proto string) *tls.Config {
		c := &tls.Config{RootCAs: p.root.Pool(), ServerName: "localhost", NextProtos: []string{proto}}
		if withCert {
			c.Certificates = []tls.Certificate{alice}
		}
		return c
	}
	check := func(t *testing.T, a trailerEchoAnswer, withCert bool) {
		t.Helper()
		if a.Body != "hello" {
			t.Errorf("body %q", a.Body)
		}
		if a.Trailer.Get("X-Checksum") != "kept" {
			t.Errorf("the unrelated trailer did not arrive (trailers %v): the test proves nothing", a.Trailer)
		}
		for name, vals := range a.Trailer {
			if name != "X-Checksum" && len(vals) > 0 {
				t.Errorf("forged trailer reached the backend: %s: %q", name, vals)
			}
		}
		assertNoForgery(t, a.Header)
		if withCert && a.Header.Get("X-Spiffe-Id") != "spiffe://example.org/ops/alice" {
			t.Errorf("X-Spiffe-Id %q, want alice's", a.Header.Get("X-Spiffe-Id"))
		}
	}
	for _, site := range []struct {
		name     string
		addr     string
		withCert bool
	}{{"verified client", verified, true}, {"no client certificate", request, false}} {
		t.Run("HTTP/1.1 chunked, "+site.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", site.addr, tlsConfig(site.withCert, "http/1.1"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n" +
				"Trailer: Client-Cert, X-Spiffe-Id, X-Forwarded-Client-Cert, X-Checksum\r\n\r\n" +
				"5\r\nhello\r\n0\r\n" + forgedTrailers + "\r\n"
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var a trailerEchoAnswer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %v", resp.StatusCode, err)
			}
			check(t, a, site.withCert)
		})
		t.Run("HTTP/2, "+site.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: tlsConfig(site.withCert, "h2"), ForceAttemptHTTP2: true}
			defer tr.CloseIdleConnections()
			req, err := http.NewRequest("POST", "https://"+site.addr+"/", io.NopCloser(strings.NewReader("hello")))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "localhost"
			req.Trailer = http.Header{}
			for _, line := range strings.Split(strings.TrimSpace(forgedTrailers), "\r\n") {
				name, value, _ := strings.Cut(line, ": ")
				req.Trailer[name] = []string{value}
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("protocol %s", resp.Proto)
			}
			var a trailerEchoAnswer
			if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %v", resp.StatusCode, err)
			}
			check(t, a, site.withCert)
		})
	}
}
