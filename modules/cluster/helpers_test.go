package cluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/certmagic"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/modules/material/castore"
	storageredis "github.com/trustline/trustline/modules/storage/redis"
)

// testStorage is a storage module that hands a config the storage a test
// made (so that the test can stop it, as when a node dies).
type testStorage struct {
	Node string `json:"node"`
}

var testStorages sync.Map // node name -> certmagic.Storage

func (testStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.cluster_test", New: func() caddy.Module { return new(testStorage) }}
}

func (s *testStorage) CertMagicStorage() (certmagic.Storage, error) {
	v, ok := testStorages.Load(s.Node)
	if !ok {
		return nil, fmt.Errorf("no test storage for node %q", s.Node)
	}
	return v.(certmagic.Storage), nil
}

func init() { caddy.RegisterModule(testStorage{}) }

// node is one cluster node in this process: its own storage client, pki
// app and trustline_cluster app, as one Caddy config.
type node struct {
	name    string
	ctx     caddy.Context
	redis   *storageredis.Redis // nil on file storage
	storage certmagic.Storage
	app     *App
	ca      *caddypki.CA
	st      *caState
	stopped bool
}

type nodeOpts struct {
	redisAddr  string
	fileDir    string // file storage instead of Redis
	lockTTL    time.Duration
	pki        string // pki app JSON; default one CA "local"
	cluster    string // trustline_cluster JSON; default {}
	wantErr    string // Provision must fail with this
	noStart    bool
	keyPrefix  string
	nameSuffix string
}

var nodeSeq sync.Map

// startNode provisions and starts a node.
func startNode(t testing.TB, name string, o nodeOpts) *node {
	t.Helper()
	n := &node{name: name}
	key := fmt.Sprintf("%s-%s-%p", t.Name(), name, n)
	if o.fileDir != "" {
		n.storage = &certmagic.FileStorage{Path: o.fileDir}
	} else {
		prefix := o.keyPrefix
		if prefix == "" {
			prefix = "cluster"
		}
		n.redis = &storageredis.Redis{Addresses: []string{o.redisAddr}, KeyPrefix: prefix, LockTTL: caddy.Duration(o.lockTTL)}
		rctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		if err := n.redis.Provision(rctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			n.redis.Cleanup()
		})
		n.storage, _ = n.redis.CertMagicStorage()
	}
	testStorages.Store(key, n.storage)
	if o.pki == "" {
		o.pki = `{"certificate_authorities":{"local":{"install_trust":false}}}`
	}
	if o.cluster == "" {
		o.cluster = `{}`
	}
	storageJSON, _ := json.Marshal(map[string]string{"module": "cluster_test", "node": key})
	cfg := &caddy.Config{
		StorageRaw: storageJSON,
		AppsRaw: caddy.ModuleMap{
			"pki":               json.RawMessage(o.pki),
			"trustline_cluster": json.RawMessage(o.cluster),
		},
	}
	base, err := caddy.ProvisionContext(cfg)
	if o.wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), o.wantErr) {
			t.Fatalf("node %s: provision error %v, want one containing %q", name, err, o.wantErr)
		}
		return nil
	}
	if err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	ctx, cancel := caddy.NewContext(base)
	n.ctx = ctx
	app, err := base.App("trustline_cluster")
	if err != nil {
		t.Fatal(err)
	}
	n.app = app.(*App)
	pki, _ := base.App("pki")
	n.ca, _ = pki.(*caddypki.PKI).GetCA(base, "local")
	n.st = n.app.cas["local"]
	if !o.noStart {
		if err := n.app.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		n.stop()
		cancel()
		n.app.Cleanup()
	})
	return n
}

// stop stops the node's cluster app (idempotent).
func (n *node) stop() {
	if !n.stopped {
		n.stopped = true
		n.app.Stop()
	}
}

// kill stops the node as a crash would: its storage connection goes first,
// so nothing it holds is released (its locks expire after their TTL).
func (n *node) kill() {
	n.redis.Cleanup()
	n.stop()
}

// inMemory is the intermediate Caddy's pki app of the node issues from.
func (n *node) inMemory() string {
	_, chain := n.st.inMemory()
	if len(chain) == 0 {
		return ""
	}
	return chain[0].SerialNumber.Text(16)
}

// stored is the serial of the intermediate in storage.
func (n *node) stored(t testing.TB) string {
	t.Helper()
	ca, err := castore.Load(context.Background(), n.storage, "local", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Issuer().SerialNumber.Text(16)
}

// eventually waits up to d for cond.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startRedis(t testing.TB) string {
	t.Helper()
	addr, _ := bench.StartRedis(t)
	return addr
}

func (s *caState) inMemoryRoot() *x509.Certificate {
	root, _ := s.inMemory()
	return root
}
