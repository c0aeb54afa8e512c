package redis

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"
)

// startCluster runs a three-master Redis Cluster on loopback and returns
// the addresses of its nodes.
func startCluster(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, startRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
	}
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	for i, a := range addrs {
		c := rawClient(t, a)
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", ranges[i][0], ranges[i][1]).Err(); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			host, port := strings.Split(a, ":")[0], strings.Split(a, ":")[1]
			if err := rawClient(t, addrs[0]).ClusterMeet(ctx, host, port).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, a := range addrs {
		waitFor(t, "the cluster to form", func() bool {
			info, _ := rawClient(t, a).ClusterInfo(ctx).Result()
			return strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3")
		})
	}
	return addrs
}

// TestCluster: with several addresses the storage runs on Redis Cluster;
// the hash tag keeps the scripts' keys in one slot, and the semantics are
// those of the file storage.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	addrs := startCluster(t)
	r := &Redis{Addresses: addrs, KeyPrefix: "clustered"}
	if err := provision(t, r); err != nil {
		t.Fatal(err)
	}
	st, _ := r.CertMagicStorage()
	fsStore := &certmagic.FileStorage{Path: t.TempDir()}
	for i, o := range conformance {
		if want, got := outcome(ctx, fsStore, o), outcome(ctx, st, o); got != want {
			t.Errorf("step %d %s %q: redis cluster gave %s, file storage %s", i, o.do, o.key, got, want)
		}
	}
	if err := st.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.(certmagic.TryLocker).TryLock(ctx, "x"); ok || err != nil {
		t.Errorf("TryLock of a held lock: %v, %v", ok, err)
	}
	if err := st.Unlock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := provision(t, &Redis{Addresses: addrs, DB: 1}); err == nil || !strings.Contains(err.Error(), "only db 0") {
		t.Errorf("db 1 on a cluster: %v", err)
	}
}
