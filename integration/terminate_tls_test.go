package integration

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
)

// TestTerminateTLSResumes: TLS terminated at layer 4 by the suite's
// terminate_tls resumes sessions, where caddy-l4's own tls handler (in the
// pinned version) issues tickets that no later connection can redeem (a
// new ticket key per connection). Checked with Go's TLS client and with
// openssl s_client -sess_out/-sess_in, and in the handshake metric. With
// client_auth, Caddy turns tickets off (a ticket is not bound to the
// policy that authenticated the client), and terminate_tls keeps that;
// `session_tickets off` turns them off too.
func TestTerminateTLSResumes(t *testing.T) {
	p := newPeerPKI(t)
	plainL4, suite, mtls, noTickets, site := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	layer4 {
		%[1]s {
			route {
				tls
				echo
			}
		}
		%[2]s {
			route {
				terminate_tls
				echo
			}
		}
		%[3]s {
			route {
				terminate_tls {
					connection_policy {
						client_auth {
							trust_pool file %[5]s
						}
					}
				}
				echo
			}
		}
		%[8]s {
			route {
				terminate_tls {
					session_tickets off
				}
				echo
			}
		}
	}
}

# loads the server certificate into the tls app for the layer-4 handlers
https://localhost:%[4]s {
	tls %[6]s %[7]s
	respond "site"
}
`, plainL4, suite, mtls, bench.Port(site), p.rootFile, p.srvCert, p.srvKey, noTickets))
	bench.WaitPort(t, suite, 10*time.Second)

	// talk makes one connection and returns the echoed line and whether
	// the handshake resumed a session from cache
	talk := func(addr string, cache tls.ClientSessionCache) (string, bool, error) {
		t.Helper()
		cfg := &tls.Config{ServerName: "localhost", RootCAs: p.root.Pool(), Certificates: []tls.Certificate{p.leaves["alice"].TLS()}, ClientSessionCache: cache}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return "", false, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(conn, "ping\n"); err != nil {
			return "", false, err
		}
		// reading the answer also reads any NewSessionTicket message
		line, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line), conn.ConnectionState().DidResume, err
	}
	for _, tc := range []struct {
		name, addr  string
		wantResumed bool
	}{
		{"caddy-l4 tls", plainL4, false},
		{"terminate_tls", suite, true},
		{"terminate_tls with client_auth", mtls, false},
		{"terminate_tls with session_tickets off", noTickets, false},
	} {
		cache := tls.NewLRUClientSessionCache(4)
		for i := range 3 {
			got, resumed, err := talk(tc.addr, cache)
			if got != "ping" {
				t.Fatalf("%s, connection %d: got %q (%v), want the echo", tc.name, i, got, err)
			}
			if want := i > 0 && tc.wantResumed; resumed != want {
				t.Errorf("%s, connection %d: resumed = %v, want %v", tc.name, i, resumed, want)
			}
		}
	}

	// openssl: the second connection resumes with the first one's session
	dir := t.TempDir()
	sess := filepath.Join(dir, "session.pem")
	sclient := func(extra ...string) string {
		// Go's server sends its tickets with its first flight when it
		// asks for no client certificate: s_client has them at once
		cmd := exec.Command(bench.Need(t, "openssl"), append([]string{"s_client", "-connect", suite, "-servername", "localhost",
			"-CAfile", p.rootFile, "-verify_return_error"}, extra...)...)
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := sclient("-sess_out", sess); !strings.Contains(out, "Verify return code: 0 (ok)") {
		t.Fatalf("openssl s_client through terminate_tls:\n%s", out)
	}
	if _, err := os.Stat(sess); err != nil {
		t.Fatalf("openssl saved no session: %v", err)
	}
	if out := sclient("-sess_in", sess); !strings.Contains(out, "Reused, TLSv1.3") {
		t.Errorf("openssl -sess_in did not resume through terminate_tls:\n%s", out)
	}

	if n := metricValue(t, c.Metrics(t), `trustline_l4_tls_handshakes_total{result="resumed"}`); n < 3 {
		t.Errorf("resumed handshakes counted: %v, want at least 3", n)
	}
}

// TestTerminateTLSHandshakeTimeout: a client that connects and sends
// nothing is closed once handshake_timeout has passed, and the failure is
// counted.
func TestTerminateTLSHandshakeTimeout(t *testing.T) {
	p := newPeerPKI(t)
	l4, site := bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
	layer4 {
		%[1]s {
			route {
				terminate_tls {
					handshake_timeout 300ms
				}
				echo
			}
		}
	}
}
https://localhost:%[2]s {
	tls %[3]s %[4]s
	respond "site"
}
`, l4, bench.Port(site), p.srvCert, p.srvKey))
	// (no WaitPort: its probe would be a failed handshake too; the
	// listener is up once Caddy has started)
	failed := `trustline_l4_tls_handshakes_total{result="failed"}`
	before := metricValue(t, c.Metrics(t), failed)
	conn, err := net.Dial("tcp", l4)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// a generous bound: the point is that the proxy closes, not when
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a silent client was not closed (read %d, %v)", n, err)
	}
	if after := metricValue(t, c.Metrics(t), failed); after != before+1 {
		t.Errorf("failed handshakes %v before the silent client, %v after; want one more", before, after)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// metricValue is the value of one sample line (name with labels, exactly)
// in a Prometheus text exposition, or 0 when absent.
func metricValue(t *testing.T, exposition, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return 0
}
