package spiffeworkload

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/trustline/trustline/internal/testpki"
)

func serialOf(k *Keystore) string { return k.KeyPair().Leaf.SerialNumber.String() }

// TestKeystoreFollowsRotation: the agent streams a new SVID; the next
// Identity is it, OnChange runs, no reload of the config.
func TestKeystoreFollowsRotation(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, leaves := answer(t, []svid{{id: "spiffe://example.org/proxy", ca: ca}}, nil)
	f.set(resp)

	k := &Keystore{Agent: Agent{Socket: f.addr}, Usage: "client_auth"}
	if err := k.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer k.Cleanup()
	if got, want := serialOf(k), leaves[0].Cert.SerialNumber.String(); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}
	if k.KeyPair().PrivateKey == nil || len(k.KeyPair().Certificate) != 1 {
		t.Fatalf("identity %+v", k.KeyPair())
	}
	var changes atomic.Int32
	defer k.OnChange(func() { changes.Add(1) })()

	resp, leaves = answer(t, []svid{{id: "spiffe://example.org/proxy", ca: ca}}, nil)
	f.set(resp)
	want := leaves[0].Cert.SerialNumber.String()
	eventually(t, 5*time.Second, "the rotated SVID is the identity", func() bool { return serialOf(k) == want })
	eventually(t, time.Second, "OnChange ran", func() bool { return changes.Load() == 1 })
}

// TestKeystorePicksByID: with several SVIDs, the one named; without a
// name, the first (the default identity); an unknown name fails the load
// with the IDs the workload has.
func TestKeystorePicksByID(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, leaves := answer(t, []svid{
		{id: "spiffe://example.org/a", ca: ca},
		{id: "spiffe://example.org/b", ca: ca},
	}, nil)
	f.set(resp)
	ctx := testCtx(t)
	for id, want := range map[string]string{"": "spiffe://example.org/a", "spiffe://example.org/b": "spiffe://example.org/b"} {
		k := &Keystore{Agent: Agent{Socket: f.addr}, SPIFFEID: id}
		if err := k.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		if got := k.KeyPair().Leaf.URIs[0].String(); got != want {
			t.Errorf("spiffe_id %q: got %s, want %s", id, got, want)
		}
		k.Cleanup()
	}
	_ = leaves
	k := &Keystore{Agent: Agent{Socket: f.addr}, SPIFFEID: "spiffe://example.org/c"}
	err := k.Provision(ctx)
	k.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "no X509-SVID for spiffe://example.org/c (the workload has: spiffe://example.org/a, spiffe://example.org/b)") {
		t.Fatalf("got %v", err)
	}
}

// TestKeystoreUsage: an SVID without the usage its consumer needs fails
// the load (as keystore.Load asks every source to check).
func TestKeystoreUsage(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca, opts: []testpki.Option{testpki.ServerOnly()}}}, nil)
	f.set(resp)
	k := &Keystore{Agent: Agent{Socket: f.addr}, Usage: "client_auth"}
	err := k.Provision(testCtx(t))
	k.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "lacks the clientAuth extended key usage") {
		t.Fatalf("got %v", err)
	}
	k = &Keystore{Agent: Agent{Socket: f.addr}, Usage: "server_auth"}
	if err := k.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	k.Cleanup()
}

// TestUnreachableAgent: no agent at the socket fails the load at once with
// an error naming the socket; a workload with no identity says so.
func TestUnreachableAgent(t *testing.T) {
	f := newFakeAgent(t) // not started
	start := time.Now()
	k := &Keystore{Agent: Agent{Socket: f.addr}}
	err := k.Provision(testCtx(t))
	k.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "the Workload API at "+f.addr+" is unreachable") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s to fail", d)
	}
	f.start() // no answer set: PermissionDenied
	p := &Pool{Agent: Agent{Socket: f.addr}}
	err = p.Provision(testCtx(t))
	p.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "issued no identity to this process") || !strings.Contains(err.Error(), f.addr) {
		t.Fatalf("got %v", err)
	}
}

// TestWaitForAgent: with wait, the load waits for an agent that starts
// later; past wait it fails naming the socket.
func TestWaitForAgent(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t)
	go func() {
		time.Sleep(700 * time.Millisecond)
		resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca}}, nil)
		f.set(resp)
		f.start()
	}()
	k := &Keystore{Agent: Agent{Socket: f.addr, Wait: caddy.Duration(10 * time.Second)}}
	if err := k.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	k.Cleanup()

	g := newFakeAgent(t)
	start := time.Now()
	k = &Keystore{Agent: Agent{Socket: g.addr, Wait: caddy.Duration(500 * time.Millisecond)}}
	err := k.Provision(testCtx(t))
	k.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "the Workload API at "+g.addr+" gave no identity within 500ms: it is unreachable") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > 3*time.Second {
		t.Fatalf("failed after %s", d)
	}
}

// TestAgentGoneAndBack: the agent stops; the last SVID stays in force, the
// loss is counted once however many retries; the agent comes back with a
// new SVID after several seconds, and the connection picks it up within
// the backoff's bound (gRPC's own default backoff would wait far longer).
func TestAgentGoneAndBack(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, leaves := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca}}, nil)
	f.set(resp)
	k := &Keystore{Agent: Agent{Socket: f.addr}}
	if err := k.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer k.Cleanup()
	first := leaves[0].Cert.SerialNumber.String()

	f.stop()
	eventually(t, 5*time.Second, "the loss is seen", func() bool { return !k.agent.up.Load() })
	time.Sleep(8 * time.Second) // many retries while it is gone
	if got := k.agent.disconnects.Load(); got != 1 {
		t.Fatalf("%d disconnects counted for one loss", got)
	}
	if got := serialOf(k); got != first {
		t.Fatalf("identity changed to %s while the agent was gone", got)
	}
	resp, leaves = answer(t, []svid{{id: "spiffe://example.org/a", ca: ca}}, nil)
	f.set(resp)
	f.start()
	want := leaves[0].Cert.SerialNumber.String()
	eventually(t, retryMax+connRetryMax+3*time.Second, "the new SVID after the agent came back", func() bool { return serialOf(k) == want })
	if !k.agent.up.Load() {
		t.Fatal("not marked up")
	}
}

// TestOneConnectionPerSocket: every module naming the socket shares one
// stream; the last Cleanup closes it, and a new config opens a new one.
func TestOneConnectionPerSocket(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca}}, nil)
	f.set(resp)
	ctx := testCtx(t)
	k1 := &Keystore{Agent: Agent{Socket: f.addr}}
	k2 := &Keystore{Agent: Agent{Socket: f.addr}, SPIFFEID: "spiffe://example.org/a", Usage: "server_auth"}
	p := &Pool{Agent: Agent{Socket: f.addr}}
	for _, m := range []caddy.Provisioner{k1, k2, p} {
		if err := m.Provision(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.streams.Load(); got != 1 {
		t.Fatalf("%d streams for three modules", got)
	}
	k1.Cleanup()
	p.Cleanup()
	if f.open.Load() != 1 {
		t.Fatal("the stream closed while a module still uses it")
	}
	k2.Cleanup()
	eventually(t, 5*time.Second, "the last Cleanup closes the stream", func() bool { return f.open.Load() == 0 })
	if k2.KeyPair() == nil || p.CertPool() == nil {
		t.Fatal("no last good identity and pool after Cleanup")
	}
	k3 := &Keystore{Agent: Agent{Socket: f.addr}}
	if err := k3.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	k3.Cleanup()
	if got := f.streams.Load(); got != 2 {
		t.Fatalf("%d streams after a new connection", got)
	}
}

// observe sends a's logs to an observer (the agent logs under its mutex).
func observe(a *agent) *observer.ObservedLogs {
	core, logs := observer.New(zapcore.DebugLevel)
	a.mu.Lock()
	a.logger = zap.New(core)
	a.mu.Unlock()
	return logs
}

// observeNew sends the logs of every agent connection made from now on
// (until the test ends) to an observer.
func observeNew(t *testing.T) *observer.ObservedLogs {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	prev := testLogger
	testLogger = zap.New(core)
	t.Cleanup(func() { testLogger = prev })
	return logs
}

// TestExpiryWarnings: with the agent gone, an SVID past half its life is
// warned about once, and once more (as an error) when it has expired; the
// loss itself is logged once, however many retries.
func TestExpiryWarnings(t *testing.T) {
	ca := testpki.NewCA(t, "example.org ca")
	f := newFakeAgent(t).start()
	resp, _ := answer(t, []svid{{id: "spiffe://example.org/a", ca: ca,
		opts: []testpki.Option{testpki.Validity(time.Now().Add(-10*time.Second), time.Now().Add(3*time.Second))}}}, nil)
	f.set(resp)
	k := &Keystore{Agent: Agent{Socket: f.addr}}
	if err := k.Provision(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer k.Cleanup()
	logs := observe(k.agent)
	f.stop()
	count := func(msg string) int { return logs.FilterMessageSnippet(msg).Len() }
	eventually(t, 5*time.Second, "the near-expiry warning", func() bool { return count("X509-SVID nears expiry") == 1 })
	eventually(t, 6*time.Second, "the expiry error", func() bool { return count("X509-SVID expired") == 1 })
	time.Sleep(2 * monitorEvery) // further checks must not repeat them
	for msg, want := range map[string]int{"Workload API unreachable": 1, "X509-SVID nears expiry": 1, "X509-SVID expired": 1} {
		if got := count(msg); got != want {
			t.Errorf("%q logged %d times, want %d", msg, got, want)
		}
	}
	if e := logs.FilterMessageSnippet("X509-SVID expired").All()[0]; e.Level != zapcore.ErrorLevel || e.ContextMap()["spiffe_id"] != "spiffe://example.org/a" {
		t.Errorf("expiry log: %v %v", e.Level, e.ContextMap())
	}
}
