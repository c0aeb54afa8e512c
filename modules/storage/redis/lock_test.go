package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestLockContentionGoroutines: four nodes (stores with their own
// clients) and 24 goroutines fight for one lock; at no time do two hold it.
func TestLockContentionGoroutines(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	var nodes []*store
	for i := 0; i < 4; i++ {
		nodes = append(nodes, newTestStore(t, addr, storeOpts{}))
	}
	const workers, rounds = 24, 5
	var holders, total, violations atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(s *store) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if err := s.Lock(ctx, "issue_cert_example.com"); err != nil {
					t.Error(err)
					return
				}
				if holders.Add(1) != 1 {
					violations.Add(1)
				}
				time.Sleep(time.Millisecond)
				total.Add(1)
				holders.Add(-1)
				if err := s.Unlock(ctx, "issue_cert_example.com"); err != nil {
					t.Error(err)
					return
				}
			}
		}(nodes[w%len(nodes)])
	}
	wg.Wait()
	if v := violations.Load(); v != 0 {
		t.Errorf("%d times more than one holder", v)
	}
	if got := total.Load(); got != workers*rounds {
		t.Errorf("%d critical sections ran, want %d", got, workers*rounds)
	}
	// all released
	if n, _ := rawClient(t, addr).Exists(ctx, "{caddy}:l:issue_cert_example.com").Result(); n != 0 {
		t.Error("the lock is still set after every holder unlocked")
	}
}

// TestLockHelperProcess is the child of the multi-process tests, not a
// test by itself.
func TestLockHelperProcess(t *testing.T) {
	mode := os.Getenv("TL_REDIS_LOCK_CHILD")
	if mode == "" {
		t.Skip("helper process for the multi-process lock tests")
	}
	addr := os.Getenv("TL_REDIS_ADDR")
	ttl, _ := time.ParseDuration(os.Getenv("TL_REDIS_LOCK_TTL"))
	c := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	s := newStore(c, DefaultKeyPrefix, nil, ttl, zap.NewNop(), addr)
	ctx := context.Background()
	switch mode {
	case "contend":
		rounds, _ := strconv.Atoi(os.Getenv("TL_REDIS_ROUNDS"))
		for i := 0; i < rounds; i++ {
			if err := s.Lock(ctx, "shared"); err != nil {
				fmt.Println("lock:", err)
				os.Exit(2)
			}
			// the holders counter is a plain Redis counter, outside the lock
			if n := c.Incr(ctx, "test:holders").Val(); n != 1 {
				fmt.Println("violation: holders =", n)
				os.Exit(3)
			}
			time.Sleep(2 * time.Millisecond)
			c.Incr(ctx, "test:total")
			c.Decr(ctx, "test:holders")
			if err := s.Unlock(ctx, "shared"); err != nil {
				fmt.Println("unlock:", err)
				os.Exit(4)
			}
		}
		os.Exit(0)
	case "die":
		if err := s.Lock(ctx, "shared"); err != nil {
			fmt.Println("lock:", err)
			os.Exit(2)
		}
		fmt.Println("locked")
		os.Exit(0) // dies holding the lock: no Unlock, no cleanup
	}
	os.Exit(5)
}

func childProcess(t *testing.T, mode, addr string, ttl time.Duration, extraEnv ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TL_REDIS_LOCK_CHILD="+mode, "TL_REDIS_ADDR="+addr, "TL_REDIS_LOCK_TTL="+ttl.String())
	cmd.Env = append(cmd.Env, extraEnv...)
	return cmd
}

// TestLockContentionProcesses: four processes take the lock in turn; a
// counter kept in Redis outside the lock never sees two holders.
func TestLockContentionProcesses(t *testing.T) {
	addr := startRedis(t)
	const procs, rounds = 4, 15
	var wg sync.WaitGroup
	outs := make([]string, procs)
	errs := make([]error, procs)
	for i := 0; i < procs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			out, err := childProcess(t, "contend", addr, 5*time.Second, "TL_REDIS_ROUNDS="+strconv.Itoa(rounds)).CombinedOutput()
			outs[i], errs[i] = string(out), err
		}(i)
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Errorf("process %d: %v\n%s", i, errs[i], outs[i])
		}
	}
	raw := rawClient(t, addr)
	if total, _ := raw.Get(context.Background(), "test:total").Int(); total != procs*rounds {
		t.Errorf("%d critical sections ran, want %d", total, procs*rounds)
	}
}

// TestLockOfDeadNodeTakenOver: a process dies holding the lock; another
// node gets it once the TTL has run out.
func TestLockOfDeadNodeTakenOver(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	out, err := childProcess(t, "die", addr, 1500*time.Millisecond).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "locked") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	raw := rawClient(t, addr)
	owner, err := raw.Get(ctx, "{caddy}:l:shared").Result()
	if err != nil {
		t.Fatalf("the dead node's lock is not in Redis: %v", err)
	}
	s := newTestStore(t, addr, storeOpts{})
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := s.Lock(lctx, "shared"); err != nil {
		t.Fatalf("the expired lock was not taken over: %v", err)
	}
	now, _ := raw.Get(ctx, "{caddy}:l:shared").Result()
	if now == owner || !strings.Contains(now, fmt.Sprintf("/%d/", os.Getpid())) {
		t.Errorf("lock owner after takeover %q (dead node's was %q)", now, owner)
	}
	if err := s.Unlock(ctx, "shared"); err != nil {
		t.Error(err)
	}
}

func TestUnlockByNonOwnerRefused(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	a := newTestStore(t, addr, storeOpts{})
	b := newTestStore(t, addr, storeOpts{})
	raw := rawClient(t, addr)
	if err := a.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	tokenA, _ := raw.Get(ctx, "{caddy}:l:x").Result()
	if err := b.Unlock(ctx, "x"); err == nil || !strings.Contains(err.Error(), "does not hold") {
		t.Errorf("unlock by a node that never held it: %v", err)
	}
	if got, _ := raw.Get(ctx, "{caddy}:l:x").Result(); got != tokenA {
		t.Fatalf("a non-owner's unlock changed the lock: %q", got)
	}
	if ok, err := b.TryLock(ctx, "x"); ok || err != nil {
		t.Fatalf("TryLock of a held lock: %v, %v", ok, err)
	}
	// a's lock expires (a stalled) and b takes it; a's late Unlock must
	// not release b's lock
	raw.Del(ctx, "{caddy}:l:x")
	if ok, err := b.TryLock(ctx, "x"); !ok || err != nil {
		t.Fatalf("TryLock of a free lock: %v, %v", ok, err)
	}
	tokenB, _ := raw.Get(ctx, "{caddy}:l:x").Result()
	err := a.Unlock(ctx, "x")
	if err == nil || !strings.Contains(err.Error(), "no longer this node's") {
		t.Errorf("late unlock by the old owner: %v", err)
	}
	if got, _ := raw.Get(ctx, "{caddy}:l:x").Result(); got != tokenB {
		t.Fatalf("the old owner's unlock released the new owner's lock (now %q)", got)
	}
	if err := b.Unlock(ctx, "x"); err != nil {
		t.Errorf("owner's unlock: %v", err)
	}
	if n, _ := raw.Exists(ctx, "{caddy}:l:x").Result(); n != 0 {
		t.Error("lock still set after the owner's unlock")
	}
}

// TestLockRenewedWhileHeld holds a 1.5s lock for 4s: nobody else gets it,
// and the owner's unlock still releases it.
func TestLockRenewedWhileHeld(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	a := newTestStore(t, addr, storeOpts{lockTTL: 1500 * time.Millisecond})
	b := newTestStore(t, addr, storeOpts{lockTTL: 1500 * time.Millisecond})
	if err := a.Lock(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, addr)
	end := time.Now().Add(4 * time.Second)
	for time.Now().Before(end) {
		if ok, err := b.TryLock(ctx, "long"); ok || err != nil {
			t.Fatalf("another node got a held lock past its TTL: %v, %v", ok, err)
		}
		if ttl := raw.PTTL(ctx, "{caddy}:l:long").Val(); ttl <= 0 {
			t.Fatalf("held lock has TTL %v", ttl)
		}
		time.Sleep(150 * time.Millisecond)
	}
	if err := a.Unlock(ctx, "long"); err != nil {
		t.Fatalf("unlock after renewals: %v", err)
	}
	if ok, err := b.TryLock(ctx, "long"); !ok || err != nil {
		t.Fatalf("lock not free after unlock: %v, %v", ok, err)
	}
	b.Unlock(ctx, "long")
}

func TestLockHonoursContext(t *testing.T) {
	addr := startRedis(t)
	a := newTestStore(t, addr, storeOpts{})
	b := newTestStore(t, addr, storeOpts{})
	if err := a.Lock(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := b.Lock(ctx, "x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock of a held lock with a deadline: %v", err)
	}
	// Cleanup of a node stops its waiters too
	done := make(chan error, 1)
	go func() { done <- b.Lock(context.Background(), "x") }()
	time.Sleep(50 * time.Millisecond)
	b.close()
	if err := <-done; err == nil {
		t.Errorf("Lock after close: %v", err)
	}
}

// TestLostLockIsLogged: when a held lock disappears (it expired while
// Redis was unreachable, or was deleted by hand), the renewal says so.
func TestLostLockIsLogged(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	core, logs := observer.New(zap.InfoLevel)
	c := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	s := newStore(c, DefaultKeyPrefix, nil, time.Second, zap.New(core), addr)
	t.Cleanup(func() { s.close() })
	if err := s.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	rawClient(t, addr).Del(ctx, "{caddy}:l:x")
	waitFor(t, "the lost lock to be logged", func() bool {
		return logs.FilterMessageSnippet("lost a held lock").Len() == 1
	})
	if err := s.Unlock(ctx, "x"); err == nil || !strings.Contains(err.Error(), "no longer this node's") {
		t.Errorf("Unlock of a lost lock: %v", err)
	}
}
