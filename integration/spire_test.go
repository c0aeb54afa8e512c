package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// spireBackend is a Go HTTPS server that requires an X509-SVID of one ID
// (go-spiffe's own mTLS server config, from the test's Workload API
// client) and records the serials of the client certificates it sees.
type spireBackend struct {
	addr    string
	mu      sync.Mutex
	serials []string // in order of first sight
}

func startSPIREBackend(t *testing.T, src *workloadapi.X509Source, allow spiffeid.ID) *spireBackend {
	t.Helper()
	b := &spireBackend{addr: bench.FreeAddr(t)}
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig: tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(allow)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serial := r.TLS.PeerCertificates[0].SerialNumber.Text(16)
			b.mu.Lock()
			if len(b.serials) == 0 || !containsString(b.serials, serial) {
				b.serials = append(b.serials, serial)
			}
			b.mu.Unlock()
			io.WriteString(w, "backend saw "+r.TLS.PeerCertificates[0].URIs[0].String())
		}),
		ErrorLog: nil,
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *spireBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.serials...)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// spireClient is an HTTPS client presenting the SVID of src (rotations
// included) and requiring the server's SVID to be serverID; it dials addr
// whatever the URL's host. Every request is a new connection, so every
// request is a full handshake both ways.
func spireClient(src *workloadapi.X509Source, serverID spiffeid.ID, addr string) *http.Client {
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(serverID))
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   cfg,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
		},
	}
}

// spireLoad runs requests from a few workers until halted, counting
// failures and recording the server certificate serials seen.
type spireLoad struct {
	ok, failed atomic.Int64
	// dropped counts requests an old server's shutdown dropped unanswered
	// at the admin reload (see dropped in reload_load_test.go): each is
	// sent again once, and the retry must succeed
	dropped  atomic.Int64
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	errs     []string
	served   []string
}

func startSPIRELoad(client *http.Client, url, want string, workers int) *spireLoad {
	l := &spireLoad{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err != nil && dropped(err) {
					l.dropped.Add(1)
					resp, err = client.Get(url)
				}
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
						err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
					} else {
						serial := resp.TLS.PeerCertificates[0].SerialNumber.Text(16)
						l.mu.Lock()
						if !containsString(l.served, serial) {
							l.served = append(l.served, serial)
						}
						l.mu.Unlock()
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *spireLoad) halt() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func (l *spireLoad) servedSerials() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.served...)
}

func (l *spireLoad) check(t *testing.T) {
	t.Helper()
	t.Logf("%d requests ok, %d failed, %d dropped unanswered by the old server's shutdown (net/http) and retried once", l.ok.Load(), l.failed.Load(), l.dropped.Load())
	if l.failed.Load() != 0 || l.ok.Load() == 0 {
		t.Fatalf("%d of %d requests failed: %s", l.failed.Load(), l.failed.Load()+l.ok.Load(), strings.Join(l.errs, "; "))
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSPIREMTLSInOut: a real SPIRE server and two agents (one for Caddy,
// one for this test's workloads: entries are parented to an agent, so
// both serve uid 0 their own IDs). Caddy's site certificate comes from
// `get_certificate keystore spiffe_workload`, client certificates are
// verified by `live_trust spiffe_workload`, and the `mtls` transport
// presents the SVID to a Go backend that requires it. Under continuous
// load (a new connection per request): the 60s SVIDs rotate, the backend
// and the clients see Caddy's new serials; the agent is killed and
// restarted; an admin reload keeps the one agent connection; no request
// fails (a request the old server's shutdown drops unanswered at the
// reload, as vanilla Caddy's does, is sent again once and must succeed).
func TestSPIREMTLSInOut(t *testing.T) {
	srv := bench.StartSPIREServer(t, "example.org", bench.SPIREServerOptions{SVIDTTL: 60 * time.Second})
	caddyAgent := bench.StartSPIREAgent(t, srv)
	testAgent := bench.StartSPIREAgent(t, srv)
	caddyID, clientID, backendID := srv.ID("/caddy"), srv.ID("/client"), srv.ID("/backend")
	srv.Entry(t, caddyAgent, caddyID, []string{"unix:uid:0"})
	srv.Entry(t, testAgent, clientID, []string{"unix:uid:0"})
	srv.Entry(t, testAgent, backendID, []string{"unix:uid:0"})

	backendSrc := testAgent.X509Source(t, backendID)
	clientSrc := testAgent.X509Source(t, clientID)
	backend := startSPIREBackend(t, backendSrc, spiffeid.RequireFromString(caddyID))

	addr := bench.FreeAddr(t)
	config := func(generation int) string {
		return fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://caddy.test:%s {
	bind 127.0.0.1
	header X-Generation %d
	tls {
		get_certificate keystore spiffe_workload %s {
			socket %s
			wait 60s
		}
		client_auth {
			verifier live_trust spiffe_workload {
				socket %s
				trust_domains example.org
				wait 60s
			}
			verifier peer %s
		}
	}
	reverse_proxy https://%s {
		transport mtls {
			client_identity spiffe_workload %s {
				socket %s
				wait 60s
			}
			trust_pool spiffe_workload {
				socket %s
			}
			upstream_identity %s
		}
	}
}
`, bench.Port(addr), generation, caddyID, caddyAgent.Socket, caddyAgent.Socket, clientID, backend.addr, caddyID, caddyAgent.Socket, caddyAgent.Socket, backendID)
	}
	c := bench.Start(t, config(1))
	bench.WaitPort(t, addr, 30*time.Second)
	if n := strings.Count(c.Log(), "connected to the Workload API"); n != 1 {
		t.Fatalf("%d agent connections for one socket", n)
	}

	client := spireClient(clientSrc, spiffeid.RequireFromString(caddyID), addr)
	load := startSPIRELoad(client, "https://caddy.test:"+bench.Port(addr)+"/", "backend saw "+caddyID, 3)
	defer load.halt()

	// a rotation: the 60s SVID is renewed at about half its life
	waitFor(t, 75*time.Second, "Caddy's rotated SVID reaches the backend and the clients", func() bool {
		return len(backend.seen()) >= 2 && len(load.servedSerials()) >= 2
	})
	t.Logf("rotation seen: backend saw %v, clients saw %v", backend.seen(), load.servedSerials())

	// the agent goes away and comes back; the SVID held is valid meanwhile
	caddyAgent.Kill()
	c.WaitLog(t, "Workload API unreachable", 10*time.Second)
	time.Sleep(3 * time.Second) // load runs on the last SVID, with no agent
	before := load.ok.Load()
	caddyAgent.Start(t)
	c.WaitLog(t, "Workload API reachable again", 30*time.Second)
	waitFor(t, 10*time.Second, "requests after the agent is back", func() bool { return load.ok.Load() > before+20 })
	before = load.ok.Load()
	// an admin reload under load: the new config joins the connection
	if err := c.Load(t, config(2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "requests after the reload", func() bool { return load.ok.Load() > before+40 })
	load.halt()
	load.check(t)
	if n := strings.Count(c.Log(), "connected to the Workload API"); n != 1 {
		t.Errorf("%d agent connections across an admin reload", n)
	}
	if n := strings.Count(c.Log(), "Workload API unreachable"); n != 1 {
		t.Errorf("the agent's absence was logged %d times, want once", n)
	}

	metrics := c.Metrics(t)
	for _, want := range []string{
		`trustline_spiffe_workload_disconnects_total{socket="` + caddyAgent.Socket + `"} 1`,
		`trustline_spiffe_workload_connected{socket="` + caddyAgent.Socket + `"} 1`,
		`trustline_material_not_after_timestamp_seconds{kind="spiffe_workload_bundle",source="` + caddyAgent.Socket + ` example.org"}`,
		`trustline_material_not_after_timestamp_seconds{kind="keystore",source="spiffe_workload ` + caddyAgent.Socket + " " + caddyID + ` server_auth"}`,
		`trustline_material_not_after_timestamp_seconds{kind="keystore",source="spiffe_workload ` + caddyAgent.Socket + " " + caddyID + ` client_auth"}`,
		`trustline_material_certificates{kind="spiffe_workload",source="` + caddyAgent.Socket + ` example.org"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestSPIREFederation: two SPIRE servers, example.org and partner.test,
// federated (each holds the other's bundle; the entries federate with the
// other domain). Caddy trusts the bundles its agent serves: a workload of
// partner.test is verified against partner.test's bundle and let in; an
// SVID for spiffe://example.org/admin signed by partner.test's CA is
// refused at the handshake, though the peer rule would allow that ID.
func TestSPIREFederation(t *testing.T) {
	partnerCA := testpki.NewCA(t, "partner.test upstream CA")
	dir := t.TempDir()
	upCert := testpki.WriteFile(t, dir, "partner-ca.pem", partnerCA.CertPEM())
	upKey := testpki.WriteFile(t, dir, "partner-ca.key", testpki.KeyPEM(partnerCA.Key))

	ours := bench.StartSPIREServer(t, "example.org", bench.SPIREServerOptions{})
	partner := bench.StartSPIREServer(t, "partner.test", bench.SPIREServerOptions{UpstreamCert: upCert, UpstreamKey: upKey})
	ours.Federate(t, partner)
	caddyAgent := bench.StartSPIREAgent(t, ours)
	partnerAgent := bench.StartSPIREAgent(t, partner)
	caddyID, partnerClientID := ours.ID("/caddy"), partner.ID("/client")
	ours.Entry(t, caddyAgent, caddyID, []string{"unix:uid:0"}, "partner.test")
	partner.Entry(t, partnerAgent, partnerClientID, []string{"unix:uid:0"}, "example.org")
	partnerSrc := partnerAgent.X509Source(t, partnerClientID)

	addr := bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://caddy.test:%s {
	bind 127.0.0.1
	tls {
		get_certificate keystore spiffe_workload {
			socket %s
			wait 60s
		}
		client_auth {
			verifier live_trust spiffe_workload {
				socket %s
				trust_domains example.org partner.test
				wait 60s
			}
			verifier peer spiffe://partner.test/client spiffe://example.org/admin
		}
	}
	respond "hello"
}
`, bench.Port(addr), caddyAgent.Socket, caddyAgent.Socket))
	bench.WaitPort(t, addr, 30*time.Second)

	// the partner's workload, verified against the partner's bundle
	client := spireClient(partnerSrc, spiffeid.RequireFromString(caddyID), addr)
	resp, err := client.Get("https://caddy.test:" + bench.Port(addr) + "/")
	if err != nil {
		t.Fatalf("partner workload refused: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("partner workload: status %d", resp.StatusCode)
	}

	// our ID, signed by the partner's CA: refused at the handshake
	forged := partnerCA.Issue(t, testpki.URI("spiffe://example.org/admin"))
	// the same CA's own-domain certificate is let in: the refusal is the
	// trust-domain rule, not an unknown CA
	control := partnerCA.Issue(t, testpki.URI("spiffe://partner.test/client"))
	handshake := func(l *testpki.Leaf) error {
		cert := l.TLS()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
			ServerName:         "caddy.test",
			Certificates:       []tls.Certificate{cert},
			InsecureSkipVerify: true, // the server's SVID is checked above
			VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error {
				return nil
			},
		})
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3: the client learns of a refusal on its first read
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: caddy.test\r\nConnection: close\r\n\r\n"); err != nil {
			return err
		}
		b, err := io.ReadAll(conn)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "hello") {
			return fmt.Errorf("answer %q", b)
		}
		return nil
	}
	if err := handshake(control); err != nil {
		t.Fatalf("a partner.test SVID signed by the partner's CA was refused: %v", err)
	}
	if err := handshake(forged); err == nil {
		t.Fatal("spiffe://example.org/admin signed by partner.test's CA was let in")
	}
	c.WaitLog(t, "an authority vouches only for its own trust domain", 5*time.Second)
}
