package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
)

// secretDir is a directory laid out as Kubernetes projects a secret: the
// files are symlinks name -> ..data/name, ..data a symlink to a
// timestamped directory; an update writes a new timestamped directory,
// renames a new ..data symlink over the old one (the atomic step), then
// removes the old directory.
type secretDir struct {
	t       *testing.T
	dir     string
	version int
	current string
}

func newSecretDir(t *testing.T, files map[string][]byte) *secretDir {
	s := &secretDir{t: t, dir: t.TempDir()}
	s.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(s.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *secretDir) update(files map[string][]byte) {
	s.t.Helper()
	s.version++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", s.version, time.Now().UnixNano())
	for name, data := range files {
		testpki.WriteFile(s.t, filepath.Join(s.dir, ts), name, data)
	}
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		s.t.Fatal(err)
	}
	if s.current != "" {
		_ = os.RemoveAll(filepath.Join(s.dir, s.current))
	}
	s.current = ts
}

func (s *secretDir) path(name string) string { return filepath.Join(s.dir, name) }

// cutInLast is data cut in the middle of its last PEM block; cutInFirst in
// the middle of its first: what a non-atomic copy leaves for a moment.
func cutInLast(data []byte) []byte {
	begin := bytes.LastIndex(data, []byte("-----BEGIN"))
	return data[:begin+(len(data)-begin)/2]
}

func cutInFirst(data []byte) []byte {
	end := bytes.Index(data, []byte("-----END"))
	return data[:end/2]
}

// TestMaterialSwapUnderLoad: a Kubernetes secret (ca.crt, tls.crt,
// tls.key) feeds an mTLS site's client-CA bundle (`verifier live_trust
// bundle`) and its upstream client identity (`client_identity pem`, a
// leaf and its intermediate, to a backend that trusts only the root). Under
// load, the secret is swapped good -> cut inside the first block -> cut
// inside the last block -> good (new content). Wanted: clients of the last
// good version are never refused; the backend always sees a complete
// chain (no 502); each refused version is logged exactly once per source,
// naming the file's line, however long it stays; the good version after
// them is in force within 2 s.
func TestMaterialSwapUnderLoad(t *testing.T) {
	dir := t.TempDir()
	serverCA := testpki.NewCA(t, "front server CA")
	serverCert, serverKey := serverCA.Issue(t, testpki.DNS("localhost"), testpki.ServerOnly()).WriteFiles(t, dir, "server")
	// client CAs: K and B are trusted throughout, C from the last version
	caK, caB, caC := testpki.NewCA(t, "client CA K"), testpki.NewCA(t, "client CA B"), testpki.NewCA(t, "client CA C")
	clientOf := func(ca *testpki.CA) tls.Certificate {
		return ca.Issue(t, testpki.CN("client of "+ca.Cert.Subject.CommonName), testpki.ClientOnly()).TLS()
	}
	// the proxy's identity: a leaf of an intermediate; the backend trusts
	// the root only, so it needs the chain
	proxyRoot := testpki.NewCA(t, "proxy root")
	proxyInter := proxyRoot.NewIntermediate(t, "proxy intermediate")
	id1 := proxyInter.Issue(t, testpki.CN("proxy-1"), testpki.ClientOnly())
	id4 := proxyInter.Issue(t, testpki.CN("proxy-4"), testpki.ClientOnly())
	backendCA := testpki.NewCA(t, "backend CA")
	backendCAFile := testpki.WriteFile(t, dir, "backend-ca.pem", backendCA.CertPEM())
	backend := startReloadBackend(t, &reloadPKI{backendTLS: &tls.Config{
		Certificates: []tls.Certificate{backendCA.Issue(t, testpki.CN("backend"), testpki.IP("127.0.0.1"), testpki.ServerOnly()).TLS()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    proxyRoot.Pool(),
	}})

	good1 := map[string][]byte{"ca.crt": testpki.CertsPEM(caK.Cert, caB.Cert), "tls.crt": id1.CertPEM(), "tls.key": id1.KeyPEM()}
	// the new version; B last, so that a bundle cut inside its last block
	// would drop a CA the last good version had
	bundle4, chain4 := testpki.CertsPEM(caK.Cert, caC.Cert, caB.Cert), id4.CertPEM()
	good4 := map[string][]byte{"ca.crt": bundle4, "tls.crt": chain4, "tls.key": id4.KeyPEM()}
	secret := newSecretDir(t, good1)

	front := bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%s {
	bind 127.0.0.1
	tls %s %s {
		client_auth {
			verifier live_trust bundle %s
		}
	}
	reverse_proxy https://%s {
		transport mtls {
			client_identity pem %s %s
			trust_pool file %s
		}
	}
}
`, bench.Port(front), serverCert, serverKey, secret.path("ca.crt"), backend.addr,
		secret.path("tls.crt"), secret.path("tls.key"), backendCAFile))
	bench.WaitPort(t, front, 10*time.Second)

	clientFor := func(cert tls.Certificate) *http.Client {
		roots := x509.NewCertPool()
		roots.AddCert(serverCA.Cert)
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			// a new connection (and handshake) per request: each one is
			// verified against the bundle's current version
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, front)
			},
		}}
	}
	get := func(client *http.Client) (string, error) {
		resp, err := client.Get("https://localhost:" + bench.Port(front) + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
		}
		return string(body), nil
	}

	// load: clients of K and B (trusted by every good version)
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		examples   []string
		lastSeen   atomic.Value // the backend's answer: "ok <proxy CN>"
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	for i, ca := range []*testpki.CA{caK, caB, caK, caB} {
		client := clientFor(clientOf(ca))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				body, err := get(client)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(examples) < 10 {
						examples = append(examples, fmt.Sprintf("client %d (%s): %v", i, ca.Cert.Subject.CommonName, err))
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
				lastSeen.Store(body)
			}
		}()
	}
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopLoad()
	waitOK := func(n int64, what string) {
		t.Helper()
		target := ok.Load() + n
		deadline := time.Now().Add(30 * time.Second)
		for ok.Load() < target {
			if n := failed.Load(); n > 0 {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%s: %d requests of clients of the last good version failed, e.g. %v", what, n, examples)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d requests in 30s, %d failed: %v", what, ok.Load()-target+n, failed.Load(), examples)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitOK(20, "warm-up")
	if s, _ := lastSeen.Load().(string); s != "ok proxy-1" {
		t.Fatalf("the backend saw %q, want proxy-1", s)
	}

	refusedLines := func(file string) []string {
		var lines []string
		for _, l := range strings.Split(c.Log(), "\n") {
			if strings.Contains(l, "reload failed; keeping the last good version") && strings.Contains(l, `"source":"`+file+`"`) {
				lines = append(lines, l)
			}
		}
		return lines
	}
	// a refused version: both sources refuse it within 2 s; it stays on
	// disk through three periodic checks (1 s each) under load
	refused := func(name string, files map[string][]byte, n int) {
		t.Helper()
		secret.update(files)
		deadline := time.Now().Add(2 * time.Second)
		for len(refusedLines(secret.path("ca.crt"))) < n || len(refusedLines(secret.path("tls.crt"))) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not refused by both sources within 2s:\n%s", name, caddyTail(c.Log()))
			}
			time.Sleep(20 * time.Millisecond)
		}
		exposed := time.Now().Add(3500 * time.Millisecond)
		for time.Now().Before(exposed) {
			waitOK(10, name)
		}
	}
	refused("cut inside the first block", map[string][]byte{"ca.crt": cutInFirst(bundle4), "tls.crt": cutInFirst(chain4), "tls.key": id4.KeyPEM()}, 1)
	refused("cut inside the last block", map[string][]byte{"ca.crt": cutInLast(bundle4), "tls.crt": cutInLast(chain4), "tls.key": id4.KeyPEM()}, 2)

	// the good version: in force within 2 s, for the bundle (a client of
	// the new CA C is admitted) and for the identity (the backend sees it)
	secret.update(good4)
	swapped := time.Now()
	clientC := clientFor(clientOf(caC))
	for {
		body, err := get(clientC)
		if err == nil && body == "ok proxy-4" {
			break
		}
		if time.Since(swapped) > 2*time.Second {
			t.Fatalf("2s after the good version, a client of the new CA gets %q, %v", body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the good version after the refused ones was in force %v after the swap", time.Since(swapped).Round(time.Millisecond))
	waitOK(20, "after the good version")
	stopLoad()

	t.Logf("%d requests succeeded, %d failed; the backend refused %d handshakes", ok.Load(), failed.Load(), backend.refused.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests of clients of the last good version failed, e.g. %v", n, examples)
	}
	if n := backend.refused.Load(); n > 0 {
		backend.mu.Lock()
		t.Errorf("the backend refused %d handshakes (an incomplete chain), e.g. %q", n, backend.errs[:min(3, len(backend.errs))])
		backend.mu.Unlock()
	}
	// each refused version once per source, naming its line
	lineOf := regexp.MustCompile(`line (\d+):`)
	for _, file := range []string{secret.path("ca.crt"), secret.path("tls.crt")} {
		lines := refusedLines(file)
		if len(lines) != 2 {
			t.Errorf("%s: %d refusals logged for 2 refused versions, want 2:\n%s", file, len(lines), strings.Join(lines, "\n"))
			continue
		}
		first, last := lineOf.FindStringSubmatch(lines[0]), lineOf.FindStringSubmatch(lines[1])
		if first == nil || first[1] != "1" || last == nil || last[1] == "1" {
			t.Errorf("%s: the refusals do not name the lines cut (1, then a later one):\n%s", file, strings.Join(lines, "\n"))
		}
	}
}
