package tlsclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/trustline/trustline/internal/testpki"
)

// liveFor provisions a Client the way a layer-4 handler does.
func liveFor(t *testing.T, cfg *reverseproxy.TLSConfig, identity map[string]string, pins []string) *Client {
	t.Helper()
	ctx := testCtx(t)
	s := &Settings{UpstreamIdentity: pins}
	if identity != nil {
		s.ClientIdentityRaw, _ = json.Marshal(identity)
	}
	l, err := Load(ctx, cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	base, err := cfg.MakeTLSClientConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if base == nil {
		base = new(tls.Config)
	}
	l.Apply(base)
	return l
}

// handshake dials addr and runs Client.Handshake; on success it returns
// what the backend wrote (the serial it saw), and the identity presented.
func handshake(t *testing.T, l *Client, addr, serverName string) (string, string, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := l.Handshake(ctx, conn, l.Config(serverName), addr, zap.NewNop())
	if err != nil {
		var he *HandshakeError
		if !errors.As(err, &he) {
			t.Fatalf("error %v is no *HandshakeError", err)
		}
		return "", he.Presented, err
	}
	defer tc.Close()
	line, err := bufio.NewReader(tc).ReadString('\n')
	return strings.TrimSpace(strings.TrimPrefix(line, "serial:")), tc.Presented, err
}

func TestClientHandshake(t *testing.T) {
	p := newPKI(t)
	addr := testpki.ClientSerialServer(t, p.serverLeaf, p.proxyCA)
	id, leaf := p.identity(t, "proxy", p.proxyCA)
	trust := filePool(p.trustFile(t))
	raw, _ := json.Marshal(trust)

	l := liveFor(t, &reverseproxy.TLSConfig{CARaw: raw}, id, nil)
	got, who, err := handshake(t, l, addr, "127.0.0.1")
	if err != nil || got != leaf.Cert.SerialNumber.String() {
		t.Fatalf("backend saw %q, %v", got, err)
	}
	if !strings.Contains(who, "CN=proxy") || !strings.Contains(who, leaf.Cert.SerialNumber.Text(16)) {
		t.Fatalf("presented %q, want the proxy identity and its serial", who)
	}
	if l.Pool == nil || l.Keystore == nil || l.Keystore.Name() == "" {
		t.Fatalf("pool %v keystore %v", l.Pool, l.Keystore)
	}

	t.Run("outside the trust pool", func(t *testing.T) {
		foreign, _ := json.Marshal(filePool(testpki.WriteFile(t, p.dir, "foreign.pem", p.foreignCA.CertPEM())))
		l := liveFor(t, &reverseproxy.TLSConfig{CARaw: foreign}, id, nil)
		before := failures(addr, ReasonUnknownAuthority)
		_, who, err := handshake(t, l, addr, "127.0.0.1")
		var he *HandshakeError
		if !errors.As(err, &he) || he.Reason != ReasonUnknownAuthority || he.Upstream != addr {
			t.Fatalf("error %v, want a handshake error with reason unknown_authority", err)
		}
		// the backend requires a certificate; the handshake failed before
		// the client's turn came, which is what the log must say (issue 22)
		if who != "none (the handshake failed before the client certificate step)" {
			t.Fatalf("presented %q", who)
		}
		if failures(addr, ReasonUnknownAuthority) != before+1 {
			t.Fatal("failure not counted")
		}
	})
	t.Run("pins stand in for the name", func(t *testing.T) {
		l := liveFor(t, &reverseproxy.TLSConfig{CARaw: raw}, id, []string{"spiffe://example.org/backend"})
		if _, _, err := handshake(t, l, addr, "not-the-name.test"); err != nil {
			t.Fatalf("pinned SPIFFE ID: %v", err)
		}
		l = liveFor(t, &reverseproxy.TLSConfig{CARaw: raw}, id, []string{"spiffe://example.org/other"})
		_, _, err := handshake(t, l, addr, "127.0.0.1")
		if reason, _ := Classify(err); reason != ReasonIdentityMismatch {
			t.Fatalf("error %v (%s), want identity_mismatch", err, reason)
		}
	})
	t.Run("static client certificate", func(t *testing.T) {
		// tls_client_auth PEM files (read once) are presented when no
		// keystore identity is set
		cert, key := leaf.WriteFiles(t, p.dir, "static")
		l := liveFor(t, &reverseproxy.TLSConfig{CARaw: raw, ClientCertificateFile: cert, ClientCertificateKeyFile: key}, nil, nil)
		got, who, err := handshake(t, l, addr, "127.0.0.1")
		if err != nil || got != leaf.Cert.SerialNumber.String() || !strings.Contains(who, "CN=proxy") {
			t.Fatalf("backend saw %q (presented %q), %v", got, who, err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		l := liveFor(t, &reverseproxy.TLSConfig{CARaw: raw}, nil, nil)
		got, who, err := handshake(t, l, addr, "127.0.0.1")
		if err == nil {
			t.Fatalf("the backend accepted a connection without a client certificate (wrote %q)", got)
		}
		// TLS 1.3: the refusal arrives with the first read
		if reason, _ := Classify(err); reason != ReasonCertificateRequired || who != "none (no client_identity configured)" {
			t.Fatalf("error %v: reason %q, presented %q", err, reason, who)
		}
	})
}

// TestClientRotation: the next handshake after a keystore rotation
// presents the new certificate, and OnChange reports the rotation.
func TestClientRotation(t *testing.T) {
	p := newPKI(t)
	addr := testpki.ClientSerialServer(t, p.serverLeaf, p.proxyCA)
	id, one := p.identity(t, "proxy", p.proxyCA)
	raw, _ := json.Marshal(filePool(p.trustFile(t)))
	l := liveFor(t, &reverseproxy.TLSConfig{CARaw: raw}, id, nil)
	causes := make(chan string, 10)
	cancel := l.OnChange(func(cause string) { causes <- cause })
	defer cancel()
	if got, _, err := handshake(t, l, addr, "127.0.0.1"); err != nil || got != one.Cert.SerialNumber.String() {
		t.Fatalf("before: %q, %v", got, err)
	}
	two := p.proxyCA.Issue(t, testpki.CN("proxy"), testpki.ClientOnly())
	testpki.WriteFile(t, p.dir, "proxy.key", two.KeyPEM())
	testpki.WriteFile(t, p.dir, "proxy.crt", two.CertPEM())
	select {
	case cause := <-causes:
		if cause != "client identity rotated" {
			t.Fatalf("cause %q", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported after the keystore was replaced")
	}
	if got, _, err := handshake(t, l, addr, "127.0.0.1"); err != nil || got != two.Cert.SerialNumber.String() {
		t.Fatalf("after the rotation the backend saw %q (%v), want %s", got, err, two.Cert.SerialNumber)
	}
}

func TestCheck(t *testing.T) {
	raw := json.RawMessage(`{"provider":"file","pem_files":["/ca.pem"]}`)
	for _, tc := range []struct {
		name     string
		cfg      *reverseproxy.TLSConfig
		identity bool
		pins     []string
		want     string
	}{
		{"two client certificates", &reverseproxy.TLSConfig{ClientCertificateFile: "a", ClientCertificateKeyFile: "b"}, true, nil, "client_identity and tls_client_auth"},
		{"pins without verification", &reverseproxy.TLSConfig{InsecureSkipVerify: true}, false, []string{"backend.test"}, "upstream_identity needs verification"},
		{"two trust pools", &reverseproxy.TLSConfig{CARaw: raw, RootCAPEMFiles: []string{"/x"}}, false, nil, "trust_pool and tls_trusted_ca_certs"},
		{"pool without verification", &reverseproxy.TLSConfig{CARaw: raw, InsecureSkipVerify: true}, false, nil, "a trust pool is set"},
		{"bad pin", nil, false, []string{"https://backend"}, `upstream_identity "https://backend"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Settings{UpstreamIdentity: tc.pins}
			if tc.identity {
				s.ClientIdentityRaw = raw
			}
			err := Check(tc.cfg, s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if err := Check(&reverseproxy.TLSConfig{CARaw: raw}, &Settings{ClientIdentityRaw: raw, UpstreamIdentity: []string{"spiffe://example.org"}}); err != nil {
		t.Fatal(err)
	}
}
