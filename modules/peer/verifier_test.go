package peer

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/verify"
)

// handshake runs a real TLS handshake in which the server calls v as
// Caddy's client_auth does (from VerifyConnection, with the chains that
// crypto/tls verified against pool; pool nil: nothing is verified). It
// returns the client's and the server's handshake errors and, on success,
// the identity the server sees afterwards.
func handshake(t *testing.T, v *Verifier, ca *testpki.CA, pool bool, client *testpki.Leaf) (clientErr, serverErr error, id *Identity) {
	t.Helper()
	srvLeaf := ca.Issue(t, testpki.DNS("server.test"))
	cfg := &tls.Config{Certificates: []tls.Certificate{srvLeaf.TLS()}, ClientAuth: tls.RequireAnyClientCert}
	if pool {
		cfg.ClientCAs, cfg.ClientAuth = ca.Pool(), tls.RequireAndVerifyClientCert
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, c := range cs.PeerCertificates {
			raw[i] = c.Raw
		}
		return v.VerifyClientCertificate(raw, cs.VerifiedChains)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, cfg)
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil {
			cs := srv.ConnectionState()
			id = FromState(&cs)
			// the client reads its session ticket / alert
			_, _ = srv.Write([]byte("x"))
		}
		a.Close()
		done <- err
	}()
	ccfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "server.test"}
	if client != nil {
		ccfg.Certificates = []tls.Certificate{client.TLS()}
	}
	cl := tls.Client(b, ccfg)
	clientErr = cl.Handshake()
	if clientErr == nil {
		// in TLS 1.3 the client learns of a refusal on its first read
		_, clientErr = cl.Read(make([]byte, 1))
	}
	b.Close()
	serverErr = <-done
	return clientErr, serverErr, id
}

func observed(v *Verifier) *observer.ObservedLogs {
	core, logs := observer.New(zap.InfoLevel)
	v.logger = zap.New(core)
	return logs
}

func TestVerifierHandshake(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	allowed := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice"))
	other := ca.Issue(t, testpki.URI("spiffe://example.org/dev/bob"))
	v := &Verifier{Patterns: Patterns{SPIFFEID: []string{"spiffe://example.org/ops/*"}}}
	if err := v.Compile(); err != nil {
		t.Fatal(err)
	}
	logs := observed(v)

	before := computed.Load()
	cerr, serr, id := handshake(t, v, ca, true, allowed)
	if cerr != nil || serr != nil || id == nil || id.SPIFFEID != "spiffe://example.org/ops/alice" {
		t.Fatalf("allowed: client %v, server %v, id %+v", cerr, serr, id)
	}
	if n := computed.Load() - before; n != 1 {
		t.Fatalf("identity built %d times for the handshake and the connection state; want once", n)
	}

	cerr, serr, _ = handshake(t, v, ca, true, other)
	if serr == nil || !strings.Contains(serr.Error(), `client identity not allowed: spiffe_id "spiffe://example.org/dev/bob"`) {
		t.Fatalf("other: server error %v", serr)
	}
	if cerr == nil || !strings.Contains(cerr.Error(), "bad certificate") {
		t.Fatalf("other: client error %v", cerr)
	}
	entries := logs.FilterMessage("refused TLS handshake: client identity not allowed").All()
	if len(entries) != 1 {
		t.Fatalf("refusal log entries: %d (%v)", len(entries), logs.All())
	}
	if f := entries[0].ContextMap(); f["spiffe_id"] != "spiffe://example.org/dev/bob" || f["rule"] != "spiffe_id" || f["patterns"] != "[spiffe://example.org/ops/*]" {
		t.Fatalf("refusal log fields: %v", f)
	}

	// nothing verified the chain (no trust pool): refused, even an allowed identity
	cerr, serr, _ = handshake(t, v, ca, false, allowed)
	if serr == nil || !strings.Contains(serr.Error(), "not verified against a trust pool") || cerr == nil {
		t.Fatalf("unverified: client %v, server %v", cerr, serr)
	}
	if logs.FilterMessage("refused TLS handshake: client certificate not verified").Len() != 1 {
		t.Fatalf("no log for the unverified refusal: %v", logs.All())
	}

	// shadow: nothing refused, everything logged
	shadow := &Verifier{Patterns: v.Patterns, Shadow: true}
	slogs := observed(shadow)
	if cerr, serr, _ := handshake(t, shadow, ca, true, other); cerr != nil || serr != nil {
		t.Fatalf("shadow other: client %v, server %v", cerr, serr)
	}
	if cerr, serr, id := handshake(t, shadow, ca, false, allowed); cerr != nil || serr != nil || id != nil {
		t.Fatalf("shadow unverified: client %v, server %v, id %v", cerr, serr, id)
	}
	if slogs.FilterMessage("shadow: would refuse: client identity not allowed").Len() != 1 ||
		slogs.FilterMessage("shadow: would refuse: client certificate not verified").Len() != 1 {
		t.Fatalf("shadow logs: %v", slogs.All())
	}
}

func TestVerifierCaddyfile(t *testing.T) {
	cases := []struct {
		in, err string
		shadow  bool
	}{
		{in: `peer spiffe://example.org/ops/*`},
		{in: "peer spiffe://example.org/ops/* {\n shadow\n dns x.example.org\n}", shadow: true},
		{in: "peer {\n shadow\n}", err: "verifier peer: no identity pattern given"},
		{in: "peer {\n shadow\n shadow\n spiffe_id spiffe://a/b\n}", err: "duplicate option 'shadow'"},
		{in: "peer {\n shadow on\n}", err: "shadow takes no argument"},
		{in: "peer {\n allow x\n}", err: `verifier peer: unknown option "allow" (expected one of: spiffe_id, trust_domain, dns, uri, email, ip, subject, cn, o, ou, issuer, fingerprint, spki, shadow`},
		{in: `peer dns:`, err: "verifier peer: empty dns pattern"},
	}
	for _, c := range cases {
		var v Verifier
		err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || v.Shadow != c.shadow {
			t.Errorf("%q: %v, shadow %v", c.in, err, v.Shadow)
		}
	}
}

// TestLiveTrustVerifiedLeaf: a leaf that truststore's live_trust verifier
// verified (recorded through material.RecordVerified, with crypto/tls in
// RequireAnyClientCert mode and so no VerifiedChains) has an identity,
// built from the chain verification returned, not the presented one; a
// copy of the same bytes that nobody verified does not.
func TestLiveTrustVerifiedLeaf(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	inter := ca.NewIntermediate(t, "inter")
	leaf := inter.Issue(t, testpki.URI("spiffe://example.org/ops/alice"))
	junk := testpki.NewCA(t, "self-made root")
	raw := [][]byte{leaf.Cert.Raw, inter.Cert.Raw, junk.Cert.Raw}
	v := &Verifier{Patterns: Patterns{SPIFFEID: []string{"spiffe://example.org/ops/*"}}}
	if err := v.Compile(); err != nil {
		t.Fatal(err)
	}
	observed(v)
	if err := v.VerifyClientCertificate(raw, nil); err != errUnverified {
		t.Fatalf("before live_trust verified it: %v", err)
	}
	verify.Record(raw[0], &verify.Verified{Chain: []*x509.Certificate{leaf.Cert, inter.Cert, ca.Cert}})
	if err := v.VerifyClientCertificate(raw, nil); err != nil {
		t.Fatalf("after live_trust verified it: %v", err)
	}
	copied := [][]byte{append([]byte(nil), raw[0]...), raw[1]}
	if err := v.VerifyClientCertificate(copied, nil); err != errUnverified {
		t.Fatalf("an unverified copy: %v", err)
	}
	presented := &x509.Certificate{Raw: raw[0]}
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{presented, inter.Cert, junk.Cert}}
	id := FromState(cs)
	if id == nil || id.SPIFFEID != "spiffe://example.org/ops/alice" || len(id.Chain) != 2 ||
		!bytes.Equal(id.Chain[0], inter.Cert.Raw) || !bytes.Equal(id.Chain[1], ca.Cert.Raw) {
		t.Fatalf("FromState after live_trust: %+v", id)
	}
	other := ca.Issue(t, testpki.URI("spiffe://example.org/ops/alice"))
	if FromState(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{other.Cert}}) != nil {
		t.Fatal("an unverified leaf has an identity")
	}
	runtime.KeepAlive(raw)
}
