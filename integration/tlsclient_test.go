package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// mtlsSite is a Caddy HTTPS site on localhost with a server certificate of
// its own test CA, for tests that put client_auth under test.
type mtlsSite struct {
	Addr     string // 127.0.0.1:port
	URL      string // https://localhost:port/
	CertFile string
	KeyFile  string
	CAFile   string // the CA that signed the server certificate, for curl
	dir      string
}

func newMTLSSite(t *testing.T) *mtlsSite {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "server ca")
	srv := ca.Issue(t, testpki.DNS("localhost"), testpki.ServerOnly())
	s := &mtlsSite{Addr: bench.FreeAddr(t), dir: dir}
	s.URL = "https://localhost:" + bench.Port(s.Addr) + "/"
	s.CertFile, s.KeyFile = srv.WriteFiles(t, dir, "server")
	s.CAFile = testpki.WriteFile(t, dir, "server-ca.pem", ca.CertPEM())
	return s
}

// Caddyfile is a config whose one site requires client certificates
// checked by clientAuth (the body of a client_auth block).
func (s *mtlsSite) Caddyfile(clientAuth string) string {
	return fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%s {
	tls %s %s {
		client_auth {
			%s
		}
	}
	respond "hello {http.request.tls.client.subject}"
}
`, bench.Port(s.Addr), s.CertFile, s.KeyFile, clientAuth)
}

// client writes leaf's files and returns curl's --cert/--key arguments.
func (s *mtlsSite) client(t *testing.T, name string, leaf *testpki.Leaf) []string {
	t.Helper()
	cert, key := leaf.WriteFiles(t, filepath.Join(s.dir, "clients"), name)
	return []string{"--cert", cert, "--key", key}
}

// get makes one request with curl; it returns the body, or "" and curl's
// error when the handshake or request failed.
func (s *mtlsSite) get(t *testing.T, clientArgs []string) (string, string) {
	t.Helper()
	args := append([]string{"--cacert", s.CAFile, "--resolve", "localhost:" + bench.Port(s.Addr) + ":127.0.0.1", "--fail"}, clientArgs...)
	out, errOut, code := bench.Curl(t, append(args, s.URL)...)
	if code != 0 {
		return "", fmt.Sprintf("curl exit %d: %s", code, strings.TrimSpace(errOut))
	}
	return out, ""
}

// eventually polls cond (up to limit) and fails with what it last said.
func eventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, limit, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *mtlsSite) accepted(t *testing.T, client []string, want string) func() (bool, string) {
	return func() (bool, string) {
		body, errMsg := s.get(t, client)
		if errMsg != "" {
			return false, errMsg
		}
		return strings.Contains(body, want), body
	}
}

func (s *mtlsSite) refused(t *testing.T, client []string) func() (bool, string) {
	return func() (bool, string) {
		body, errMsg := s.get(t, client)
		return errMsg != "", "accepted: " + body
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
