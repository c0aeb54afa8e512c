package redis

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/trustline/trustline/integration/bench"
)

// TestSentinelFailover: a master, a replica and a Sentinel; the storage
// finds the master through the Sentinel, and after a failover it writes to
// the new master and still reads what it wrote before; then it closes
// without an error.
func TestSentinelFailover(t *testing.T) {
	ctx := context.Background()
	master := startRedis(t, "--repl-diskless-sync-delay", "0")
	replica := startRedis(t, "--replicaof", "127.0.0.1", bench.Port(master))
	sentinel := bench.FreeAddr(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`port %s
bind 127.0.0.1
dir %s
sentinel monitor caddy 127.0.0.1 %s 1
sentinel down-after-milliseconds caddy 1000
sentinel failover-timeout caddy 5000
`, bench.Port(sentinel), dir, bench.Port(master))), 0o600)
	bench.StartProcess(t, bench.Need(t, "redis-server"), conf, "--sentinel")
	bench.WaitPort(t, sentinel, 10*time.Second)
	sc := goredis.NewSentinelClient(&goredis.Options{Addr: sentinel})
	t.Cleanup(func() { sc.Close() })
	waitFor(t, "the replica to sync", func() bool {
		info, _ := rawClient(t, replica).Info(ctx, "replication").Result()
		return containsAll(info, "master_link_status:up")
	})
	waitFor(t, "the Sentinel to see the replica", func() bool {
		rs, _ := sc.Replicas(ctx, "caddy").Result()
		return len(rs) == 1
	})

	r := &Redis{Sentinel: &Sentinel{MasterName: "caddy", Addresses: []string{sentinel}}, ReadTimeout: caddy2s, DialTimeout: caddy2s}
	if err := provision(t, r); err != nil {
		t.Fatal(err)
	}
	st, _ := r.CertMagicStorage()
	if err := st.Store(ctx, "before/failover", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the write to replicate", func() bool {
		n, _ := rawClient(t, replica).Exists(ctx, "{caddy}:v:before/failover").Result()
		return n == 1
	})
	var ferr error
	waitFor(t, "the Sentinel to accept a failover", func() bool {
		ferr = sc.Failover(ctx, "caddy").Err()
		return ferr == nil
	})
	waitFor(t, "the Sentinel to promote the replica", func() bool {
		addr, _ := sc.GetMasterAddrByName(ctx, "caddy").Result()
		return len(addr) == 2 && addr[1] == bench.Port(replica)
	})
	// in the moments after a promotion the old master still takes writes
	// (Redis Sentinel's window, before it is turned into a replica): wait
	// until the storage's writes land on the new master
	waitFor(t, "writes to reach the new master", func() bool {
		if st.Store(ctx, "after/failover", []byte("2")) != nil {
			return false
		}
		n, _ := rawClient(t, replica).Exists(ctx, "{caddy}:v:after/failover").Result()
		return n == 1
	})
	if v, err := st.Load(ctx, "before/failover"); err != nil || string(v) != "1" {
		t.Errorf("value written before the failover: %q, %v", v, err)
	}
	if err := st.Lock(ctx, "after"); err != nil {
		t.Fatal(err)
	}
	if err := st.Unlock(ctx, "after"); err != nil {
		t.Fatal(err)
	}
	// the config unloads: closing the client after a failover is clean
	// (go-redis v9.17.3 closed the connections it dropped from its pool
	// on the switch twice, and the second close was reported)
	if err := r.Cleanup(); err != nil {
		t.Errorf("cleanup after a failover: %v", err)
	}
}

func TestSentinelUnknownMaster(t *testing.T) {
	sentinel := bench.FreeAddr(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\n", bench.Port(sentinel), dir)), 0o600)
	bench.StartProcess(t, bench.Need(t, "redis-server"), conf, "--sentinel")
	bench.WaitPort(t, sentinel, 10*time.Second)
	err := provision(t, &Redis{Sentinel: &Sentinel{MasterName: "nope", Addresses: []string{sentinel}}, DialTimeout: caddy2s, ReadTimeout: caddy2s})
	if err == nil || !containsAll(err.Error(), "storage redis: sentinel nope@"+sentinel, "check master_name") {
		t.Fatalf("unknown master: %v", err)
	}
	t.Log(err)
}

const caddy2s = 2_000_000_000

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	start := time.Now()
	defer func() { t.Logf("waited %s for %s", time.Since(start).Round(time.Millisecond), what) }()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
