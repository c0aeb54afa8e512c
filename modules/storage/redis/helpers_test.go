package redis

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/trustline/trustline/integration/bench"
)

// startRedis runs a redis-server of its own for the test (see
// bench.StartRedis) and returns its address.
func startRedis(t testing.TB, extra ...string) string {
	t.Helper()
	addr, _ := bench.StartRedis(t, extra...)
	return addr
}

// rawClient is a plain client to look into Redis behind the storage's back.
func rawClient(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

type storeOpts struct {
	prefix  string
	sealer  *sealer
	lockTTL time.Duration
}

// newTestStore makes a store on addr without going through Caddy.
func newTestStore(t testing.TB, addr string, o storeOpts) *store {
	t.Helper()
	if o.prefix == "" {
		o.prefix = DefaultKeyPrefix
	}
	if o.lockTTL == 0 {
		o.lockTTL = DefaultLockTTL
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping %s: %v", addr, err)
	}
	s := newStore(c, o.prefix, o.sealer, o.lockTTL, zaptest.NewLogger(t), addr)
	t.Cleanup(func() { s.close() })
	return s
}

// benchStartRedis is startRedis that also gives the process, to stop it.
func benchStartRedis(t testing.TB) (string, *bench.Process) {
	t.Helper()
	return bench.StartRedis(t)
}

// restartRedisOn starts a fresh redis-server on addr (after the first was stopped).
func restartRedisOn(t testing.TB, addr string) *bench.Process {
	t.Helper()
	bench.Need(t, "redis-server")
	p := bench.StartProcess(t, "redis-server", "--port", bench.Port(addr), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	bench.WaitPort(t, addr, 10*time.Second)
	return p
}

// testSealer makes a sealer with fresh random keys; the first id writes.
func testSealer(t testing.TB, ids ...string) *sealer {
	t.Helper()
	var keys []*sealKey
	for _, id := range ids {
		keys = append(keys, testKey(t, id))
	}
	s, err := newSealer(keys, false)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testKey(t testing.TB, id string) *sealKey {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TL_TEST_KEY_"+id, base64.StdEncoding.EncodeToString(raw))
	k, err := loadSealKey(&KeySource{ID: id, Env: "TL_TEST_KEY_" + id}, "key")
	if err != nil {
		t.Fatal(err)
	}
	return k
}
