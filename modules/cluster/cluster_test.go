package cluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/caddyserver/certmagic"
	goredis "github.com/redis/go-redis/v9"

	"github.com/trustline/trustline/internal/caddyinternals"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/keystore"
	"github.com/trustline/trustline/modules/material/castore"
)

// TestForcedRenewalFollowed: a renewal forced on one node is what every
// node's Caddy issues from, through the storage's notifications alone
// (checks every hour), on one root; the status says so.
func TestForcedRenewalFollowed(t *testing.T) {
	addr := startRedis(t)
	hourly := `{"check_interval": 3600000000000}`
	nodes := []*node{
		startNode(t, "a", nodeOpts{redisAddr: addr, cluster: hourly}),
		startNode(t, "b", nodeOpts{redisAddr: addr, cluster: hourly}),
		startNode(t, "c", nodeOpts{redisAddr: addr, cluster: hourly}),
	}
	before := nodes[0].stored(t)
	for _, n := range nodes {
		if n.inMemory() != before {
			t.Fatalf("node %s starts on intermediate %s, storage holds %s", n.name, n.inMemory(), before)
		}
	}
	res, err := nodes[0].st.renew(context.Background(), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Renewed || res.PreviousSerial != before || res.Serial == before {
		t.Fatalf("renewal %+v (previous %s)", res, before)
	}
	if got := nodes[0].stored(t); got != res.Serial {
		t.Fatalf("storage holds %s after renewing to %s", got, res.Serial)
	}
	root := nodes[0].st.inMemoryRoot()
	for _, n := range nodes {
		eventually(t, 10*time.Second, "node "+n.name+" follows the renewal", func() bool { return n.inMemory() == res.Serial })
		memRoot, chain, key := n.st.mem.Get()
		if !memRoot.Equal(root) {
			t.Errorf("node %s has another root", n.name)
		}
		if err := chain[0].CheckSignatureFrom(root); err != nil {
			t.Errorf("node %s: %v", n.name, err)
		}
		if !castore.KeyMatches(chain[0], key) {
			t.Errorf("node %s: Caddy's in-memory key does not match its intermediate", n.name)
		}
	}
	if got := nodes[1].st.stats.followed.Load(); got == 0 {
		t.Error("no change followed in the metrics")
	}
}

// TestFollowByPolling: on a storage without notifications (the file
// storage of nodes sharing a directory), the periodic check follows.
func TestFollowByPolling(t *testing.T) {
	dir := t.TempDir()
	fast := `{"check_interval": 200000000}`
	a := startNode(t, "a", nodeOpts{fileDir: dir, cluster: fast})
	b := startNode(t, "b", nodeOpts{fileDir: dir, cluster: fast})
	res, err := a.st.renew(context.Background(), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "node b follows by polling", func() bool { return b.inMemory() == res.Serial })
}

// plantIntermediate stores an intermediate signed by the stored root, with
// the given validity, as if another node had made it.
func plantIntermediate(t *testing.T, st certmagic.Storage, notBefore, notAfter time.Time) *testpki.CA {
	t.Helper()
	ctx := context.Background()
	certPEM, err := st.Load(ctx, caddyinternals.PKIKey("local", caddyinternals.PKIRootCert))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := st.Load(ctx, caddyinternals.PKIKey("local", caddyinternals.PKIRootKey))
	if err != nil {
		t.Fatal(err)
	}
	root := testpki.ParseCA(t, certPEM, keyPEM)
	inter := root.NewIntermediate(t, "planted", testpki.Validity(notBefore, notAfter))
	if err := st.Store(ctx, caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateCert), inter.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if err := st.Store(ctx, caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateKey), testpki.KeyPEM(inter.Key)); err != nil {
		t.Fatal(err)
	}
	return inter
}

// countStores counts the stores of the intermediate certificate that the
// storage announces.
func countStores(t *testing.T, st certmagic.Storage) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	want := caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateCert)
	cancel := st.(castore.KeyWatcher).WatchKeys(caddyinternals.PKIPrefix("local"), func(key string) {
		if key == want {
			n.Add(1)
		}
	})
	t.Cleanup(cancel)
	// the subscription starts asynchronously: wait until it hears a store
	probe := caddyinternals.PKIKey("local", "probe")
	eventually(t, 10*time.Second, "the subscription to start", func() bool {
		var heard atomic.Bool
		c := st.(castore.KeyWatcher).WatchKeys(probe, func(string) { heard.Store(true) })
		defer c()
		_ = st.Store(context.Background(), probe, []byte("x"))
		time.Sleep(50 * time.Millisecond)
		return heard.Load()
	})
	return &n
}

// TestOneRenewalForTheCluster: when the stored intermediate is due, every
// node's checks run at once, and exactly one renews it (under the lock);
// the others follow it.
func TestOneRenewalForTheCluster(t *testing.T) {
	addr := startRedis(t)
	hourly := `{"check_interval": 3600000000000}`
	var nodes []*node
	for _, name := range []string{"a", "b", "c"} {
		nodes = append(nodes, startNode(t, name, nodeOpts{redisAddr: addr, cluster: hourly}))
	}
	stores := countStores(t, nodes[0].storage)
	// a due intermediate appears (made by a node outside the cluster; it
	// is older than the one held, so it is also refused as a rollback):
	// the storage's notification wakes every node's check at the same
	// moment, and one renews
	now := time.Now()
	planted := plantIntermediate(t, nodes[0].storage, now.Add(-50*time.Minute), now.Add(10*time.Minute))
	if !nodes[0].st.due(planted.Cert, time.Now()) {
		t.Fatal("the planted intermediate is not due")
	}
	var renewed string
	eventually(t, 10*time.Second, "the planted intermediate renewed", func() bool {
		renewed = nodes[0].stored(t)
		return renewed != planted.Cert.SerialNumber.Text(16)
	})
	// more checks from every node at once find nothing to do
	var wg sync.WaitGroup
	for _, n := range nodes {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.st.check(context.Background())
			}()
		}
	}
	wg.Wait()
	for _, n := range nodes {
		eventually(t, 10*time.Second, "node "+n.name+" follows the renewal", func() bool { return n.inMemory() == renewed })
	}
	// give late notifications a moment, then count: planted + one renewal
	time.Sleep(300 * time.Millisecond)
	if got := stores.Load(); got != 2 {
		t.Fatalf("the intermediate was stored %d times (planted + renewals), want 2: one renewal for the cluster", got)
	}
	if got := nodes[0].stored(t); got != renewed {
		t.Fatalf("renewed again: %s after %s", got, renewed)
	}
}

// TestLockHolderDies: a node that dies holding the renewal lock blocks
// renewals until the lock's TTL runs out; then another node renews.
func TestLockHolderDies(t *testing.T) {
	addr := startRedis(t)
	a := startNode(t, "a", nodeOpts{redisAddr: addr, lockTTL: time.Second})
	b := startNode(t, "b", nodeOpts{redisAddr: addr, lockTTL: time.Second})
	held, err := a.st.renew(context.Background(), true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// held: b's periodic path skips, its forced path would wait
	if _, err := b.st.renew(context.Background(), false, 0); !errors.Is(err, errLockBusy) {
		t.Fatalf("b renewing while a holds the lock: %v", err)
	}
	a.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := b.st.renew(ctx, true, 0)
	if err != nil {
		t.Fatalf("b after a died: %v", err)
	}
	if !res.Renewed || res.PreviousSerial != held.Serial {
		t.Fatalf("b's renewal %+v, after a's %s", res, held.Serial)
	}
	if b.inMemory() != res.Serial {
		t.Errorf("b issues from %s, renewed %s", b.inMemory(), res.Serial)
	}
}

// TestInconsistentIntermediateRepaired: a stored intermediate whose key
// does not match (a writer that died between the two stores) is replaced
// at the next check (here: the one the storage's notification triggers).
func TestInconsistentIntermediateRepaired(t *testing.T) {
	addr := startRedis(t)
	a := startNode(t, "a", nodeOpts{redisAddr: addr, cluster: `{"check_interval": 3600000000000}`})
	before := a.stored(t)
	other := testpki.NewCA(t, "unrelated")
	ctx := context.Background()
	if err := a.storage.Store(ctx, caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateKey), testpki.KeyPEM(other.Key)); err != nil {
		t.Fatal(err)
	}
	if _, err := castore.Load(ctx, a.storage, "local", nil, true); !errors.Is(err, castore.ErrInconsistent) {
		t.Fatalf("a mismatched key reads as %v", err)
	}
	var ca *castore.CA
	eventually(t, 10*time.Second, "the intermediate repaired", func() bool {
		var err error
		ca, err = castore.Load(ctx, a.storage, "local", nil, true)
		return err == nil
	})
	got := ca.Issuer().SerialNumber.Text(16)
	if got == before {
		t.Errorf("still %s", got)
	}
	eventually(t, 5*time.Second, "Caddy's copy in step with the repaired intermediate", func() bool { return a.inMemory() == got })
}

// TestNodeWithItsOwnRoot: a node whose pki app made a root of its own
// (nodes started at once on an empty storage) follows the stored root.
func TestNodeWithItsOwnRoot(t *testing.T) {
	addr := startRedis(t)
	a := startNode(t, "a", nodeOpts{redisAddr: addr, noStart: true})
	// b's storage is another prefix, so it makes its own CA; then it is
	// pointed at a's CA, as if a had overwritten it
	b := startNode(t, "b", nodeOpts{redisAddr: addr, keyPrefix: "elsewhere", noStart: true})
	if b.st.inMemoryRoot().Equal(a.st.inMemoryRoot()) {
		t.Fatal("b has a's root already")
	}
	b.st.storage = a.storage
	// as when b starts on that storage: it holds nothing read from it yet
	// (a held intermediate newer than the stored one would be a rollback)
	b.st.current.Store(nil)
	b.st.check(context.Background())
	if !b.st.inMemoryRoot().Equal(a.st.inMemoryRoot()) || b.inMemory() != a.inMemory() {
		t.Error("b does not follow the stored root and intermediate")
	}
}

// TestProvisionErrors: settings the cluster cannot work with fail the
// config load with the reason.
func TestProvisionErrors(t *testing.T) {
	addr := startRedis(t)
	startNode(t, "first", nodeOpts{redisAddr: addr}) // the CA exists
	ca := testpki.NewCA(t, "files root")
	inter := ca.NewIntermediate(t, "files intermediate")
	dir := t.TempDir()
	interCrt := testpki.WriteFile(t, dir, "inter.crt", inter.CertPEM())
	interKey := testpki.WriteFile(t, dir, "inter.key", testpki.KeyPEM(inter.Key))
	rootCrt := testpki.WriteFile(t, dir, "root.crt", ca.CertPEM())
	rootKey := testpki.WriteFile(t, dir, "root.key", testpki.KeyPEM(ca.Key))
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	for _, tc := range []struct{ name, pki, cluster, want string }{
		{"ratio below Caddy's", `{"certificate_authorities":{"local":{"install_trust":false,"renewal_window_ratio":0.5}}}`, `{}`,
			"renewal_window_ratio 0.333 must be larger than the renewal_window_ratio 0.5 of pki ca \"local\""},
		{"unknown CA", "", `{"cas":["fleet"]}`, `ca "fleet": no certificate authority configured with id: fleet`},
		{"intermediate from files", js(map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{
			"install_trust": false,
			"root":          map[string]string{"certificate": rootCrt, "private_key": rootKey},
			"intermediate":  map[string]string{"certificate": interCrt, "private_key": interKey},
		}}}), `{}`, "its intermediate is configured from files"},
		{"bad ratio", "", `{"renewal_window_ratio": 1.5}`, "renewal_window_ratio 1.5: must be between 0 and 1"},
		{"short interval", "", `{"check_interval": 1000}`, "check_interval 1µs: must be at least 100ms"},
		{"CA twice", "", `{"cas":["local","local"]}`, `ca "local" listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			startNode(t, "bad", nodeOpts{redisAddr: addr, pki: tc.pki, cluster: tc.cluster, wantErr: tc.want})
		})
	}
	t.Run("CA in another storage", func(t *testing.T) {
		pki := js(map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{
			"install_trust": false,
			"storage":       map[string]string{"module": "file_system", "root": filepath.Join(t.TempDir(), "ca")},
		}}})
		startNode(t, "own-storage", nodeOpts{redisAddr: addr, keyPrefix: "empty", pki: pki, wantErr: "does not hold this CA's certificates"})
	})
}

// TestKeystoreFollowsRenewal: the internal keystore of a node issues its
// identity from the stored intermediate, and again from the new one after
// another node renewed it (notified by the storage), on the same root.
func TestKeystoreFollowsRenewal(t *testing.T) {
	addr := startRedis(t)
	hourly := `{"check_interval": 3600000000000}`
	a := startNode(t, "a", nodeOpts{redisAddr: addr, cluster: hourly})
	b := startNode(t, "b", nodeOpts{redisAddr: addr, cluster: hourly})
	src := identity(t, b, "spiffe://cluster.local/node/b")
	issuer := func() string {
		c, _ := x509.ParseCertificate(src.KeyPair().Certificate[1])
		return c.SerialNumber.Text(16)
	}
	if issuer() != a.stored(t) {
		t.Fatalf("identity issued by %s, storage holds %s", issuer(), a.stored(t))
	}
	first := src.KeyPair().Leaf.SerialNumber
	res, err := a.st.renew(context.Background(), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b's identity issued from the renewed intermediate", func() bool { return issuer() == res.Serial })
	if src.KeyPair().Leaf.SerialNumber.Cmp(first) == 0 {
		t.Error("the identity was not issued again")
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.st.inMemoryRoot())
	inter := x509.NewCertPool()
	c, _ := x509.ParseCertificate(src.KeyPair().Certificate[1])
	inter.AddCert(c)
	if _, err := src.KeyPair().Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
}

// identity provisions an internal keystore source on node n.
func identity(t testing.TB, n *node, spiffeID string) keystore.Source {
	t.Helper()
	holder := &struct {
		Raw json.RawMessage `json:"raw" caddy:"namespace=trustline.keystore inline_key=source"`
	}{Raw: json.RawMessage(fmt.Sprintf(`{"source":"internal","spiffe_id":%q}`, spiffeID))}
	src, err := keystore.Load(n.ctx, holder, "Raw", keystore.UsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestRollbackRefused: an older intermediate (certificate and key, the
// bytes Redis held before a renewal) written back in storage, as someone
// with access to Redis could: no node follows it, one renews over it
// under the lock, and every node follows that repair.
func TestRollbackRefused(t *testing.T) {
	addr := startRedis(t)
	hourly := `{"check_interval": 3600000000000}`
	a := startNode(t, "a", nodeOpts{redisAddr: addr, cluster: hourly})
	b := startNode(t, "b", nodeOpts{redisAddr: addr, cluster: hourly})
	ctx := context.Background()
	raw := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { raw.Close() })
	crtKey := "{cluster}:v:" + caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateCert)
	keyKey := "{cluster}:v:" + caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateKey)
	oldCrt, err1 := raw.HGet(ctx, crtKey, "v").Bytes()
	oldKey, err2 := raw.HGet(ctx, keyKey, "v").Bytes()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	old := a.stored(t)
	res, err := a.st.renew(ctx, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b} {
		eventually(t, 10*time.Second, "node "+n.name+" follows the renewal", func() bool { return n.inMemory() == res.Serial })
	}
	followed, refused := a.st.stats.followed.Load(), a.st.stats.rollbacks.Load()

	if err := errors.Join(raw.HSet(ctx, crtKey, "v", oldCrt).Err(), raw.HSet(ctx, keyKey, "v", oldKey).Err(),
		raw.Publish(ctx, "{cluster}:changes", caddyinternals.PKIKey("local", caddyinternals.PKIIntermediateCert)).Err()); err != nil {
		t.Fatal(err)
	}
	var repaired string
	eventually(t, 10*time.Second, "storage repaired", func() bool {
		for _, n := range []*node{a, b} {
			if n.inMemory() == old {
				t.Fatalf("node %s followed the older intermediate %s written back", n.name, old)
			}
		}
		repaired = a.stored(t)
		return repaired != old && repaired != res.Serial
	})
	for _, n := range []*node{a, b} {
		eventually(t, 10*time.Second, "node "+n.name+" follows the repair", func() bool { return n.inMemory() == repaired })
	}
	// one node renewed over the rollback, the other followed it (the
	// stats are the process's, shared by both nodes)
	if got := a.st.stats.followed.Load() - followed; got != 1 {
		t.Errorf("%d changes followed after the rollback, want 1 (the repair)", got)
	}
	if a.st.stats.rollbacks.Load() == refused {
		t.Error("no rollback counted")
	}
}
