package redis

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// keyLog collects the keys a watcher was called with.
type keyLog struct {
	mu   sync.Mutex
	keys []string
	ch   chan string
	// late: the watcher joined a store whose subscription another watcher
	// started, so it may come after the confirmation, and no resync is owed
	late bool
}

func newKeyLog() *keyLog { return &keyLog{ch: make(chan string, 100)} }

func (l *keyLog) f(key string) {
	l.mu.Lock()
	l.keys = append(l.keys, key)
	l.mu.Unlock()
	l.ch <- key
}

// next waits for the next key.
func (l *keyLog) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case k := <-l.ch:
		return k
	case <-time.After(10 * time.Second):
		t.Fatalf("no notification for %s within 10s", what)
		return ""
	}
}

// none checks that no key arrives for a moment.
func (l *keyLog) none(t *testing.T, what string) {
	t.Helper()
	select {
	case k := <-l.ch:
		t.Fatalf("%s: unexpected notification %q", what, k)
	case <-time.After(300 * time.Millisecond):
	}
}

// waitSubscribed stores a warmup key under every watched prefix through s
// until each log has heard it (subscriptions are asynchronous, one per
// store), checks that each log first heard a prefix of the warmup key (the
// resync when its subscription was confirmed), and empties the logs.
func waitSubscribed(t *testing.T, s *store, logs ...*keyLog) {
	t.Helper()
	const warmup = "pki/authorities/local/warmup"
	heard := make([]bool, len(logs))
	deadline := time.Now().Add(10 * time.Second)
	for !all(heard) {
		if time.Now().After(deadline) {
			t.Fatal("a subscription never started")
		}
		if err := s.Store(context.Background(), warmup, []byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		for i, l := range logs {
			for len(l.ch) > 0 {
				if <-l.ch == warmup {
					heard[i] = true
				}
			}
		}
	}
	for _, l := range logs {
		if l.late {
			continue
		}
		l.mu.Lock()
		if first := l.keys[0]; first == warmup || !under(warmup, first) {
			t.Errorf("a watcher's first call was %q, not its prefix (the resync on the subscription's confirmation)", first)
		}
		l.mu.Unlock()
	}
}

func all(b []bool) bool { return !slices.Contains(b, false) }

// TestWatchKeys: a Store or Delete on one node reaches the watchers of
// another node sharing the Redis (and of its own), by prefix; a cancelled
// watcher hears nothing more; another key prefix is another cluster.
func TestWatchKeys(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	a := newTestStore(t, addr, storeOpts{})
	b := newTestStore(t, addr, storeOpts{})
	other := newTestStore(t, addr, storeOpts{prefix: "other"})

	pki, all, own := newKeyLog(), newKeyLog(), newKeyLog()
	cancelPKI := b.WatchKeys("pki/authorities/local", pki.f)
	b.WatchKeys("", all.f)
	all.late = true
	a.WatchKeys("pki", own.f)
	waitSubscribed(t, a, all, pki, own)

	if err := a.Store(ctx, "pki/authorities/local/intermediate.crt", []byte("c")); err != nil {
		t.Fatal(err)
	}
	if got := pki.next(t, "a store under the prefix"); got != "pki/authorities/local/intermediate.crt" {
		t.Errorf("watcher of pki/authorities/local got %q", got)
	}
	if got := all.next(t, "a store, watching everything"); got != "pki/authorities/local/intermediate.crt" {
		t.Errorf("watcher of everything got %q", got)
	}
	if got := own.next(t, "a store by the same node"); got != "pki/authorities/local/intermediate.crt" {
		t.Errorf("the storing node's own watcher got %q", got)
	}

	// a sibling prefix that merely starts with the same letters is not under it
	if err := a.Store(ctx, "pki/authorities/localx", []byte("c")); err != nil {
		t.Fatal(err)
	}
	all.next(t, "a store of a sibling key")
	pki.none(t, "a sibling key pki/authorities/localx")

	if err := a.Delete(ctx, "pki/authorities/local"); err != nil {
		t.Fatal(err)
	}
	if got := pki.next(t, "a delete of the prefix itself"); got != "pki/authorities/local" {
		t.Errorf("delete: watcher got %q", got)
	}

	// another cluster (key prefix) on the same Redis is not heard
	if err := other.Store(ctx, "pki/authorities/local/intermediate.crt", []byte("c")); err != nil {
		t.Fatal(err)
	}
	pki.none(t, "a store under another key_prefix")

	// a failed store publishes nothing
	if err := a.Store(ctx, "pki/authorities/local/intermediate.crt/sub", []byte("c")); err != nil {
		t.Fatal(err)
	}
	pki.next(t, "a store")
	if err := a.Store(ctx, "pki/authorities/local/intermediate.crt", []byte("c")); err == nil {
		t.Fatal("storing a value over a directory succeeded")
	}
	pki.none(t, "a refused store")

	cancelPKI()
	if err := a.Store(ctx, "pki/authorities/local/root.crt", []byte("c")); err != nil {
		t.Fatal(err)
	}
	all.next(t, "a store after another watcher was cancelled")
	pki.none(t, "a cancelled watcher")
}

// TestWatchKeysAfterRestart: when Redis restarts, the subscription comes
// back by itself and every watcher hears its prefix (changes made while it
// was away are lost to pub/sub), then the changes that follow.
func TestWatchKeysAfterRestart(t *testing.T) {
	ctx := context.Background()
	addr, proc := benchStartRedis(t)
	s := newTestStore(t, addr, storeOpts{})
	l := newKeyLog()
	s.WatchKeys("pki", l.f)
	waitSubscribed(t, s, l)
	proc.Stop()
	restartRedisOn(t, addr)
	if got := l.next(t, "the subscription restored"); got != "pki" {
		t.Errorf("after the restart the watcher got %q, want its prefix", got)
	}
	if err := s.Store(ctx, "pki/y", []byte("y")); err != nil {
		t.Fatal(err)
	}
	for {
		got := l.next(t, "a store after the restart")
		if got == "pki/y" {
			break
		}
		if got != "pki" {
			t.Fatalf("unexpected key %q", got)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.keys, "pki") {
		t.Errorf("keys %q", l.keys)
	}
}
