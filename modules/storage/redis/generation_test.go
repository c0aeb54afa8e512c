package redis

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestEncryptionBindsKeyPrefix: a sealed value copied to the same key
// under another key prefix (another cluster sharing the Redis and the
// encryption key) does not open there.
func TestEncryptionBindsKeyPrefix(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	seal := testSealer(t, "k1")
	prod := newTestStore(t, addr, storeOpts{prefix: "prod", sealer: seal})
	staging := newTestStore(t, addr, storeOpts{prefix: "staging", sealer: seal})
	if err := prod.Store(ctx, "pki/authorities/local/intermediate.key", []byte(secretPEM)); err != nil {
		t.Fatal(err)
	}
	if err := staging.Store(ctx, "pki/authorities/local/intermediate.key", []byte("staging's own")); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, addr)
	moved, err := raw.HGet(ctx, "{prod}:v:pki/authorities/local/intermediate.key", "v").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.HSet(ctx, "{staging}:v:pki/authorities/local/intermediate.key", "v", moved).Err(); err != nil {
		t.Fatal(err)
	}
	v, err := staging.Load(ctx, "pki/authorities/local/intermediate.key")
	if err == nil {
		t.Fatalf("a value moved from another key prefix opened: %q", v)
	}
	if !strings.Contains(err.Error(), "key prefix") {
		t.Errorf("error: %v", err)
	}
}

// TestEncryptionReadsVersion1: values sealed before the generation and the
// prefix were bound (format version 1) still open.
func TestEncryptionReadsVersion1(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	k := testKey(t, "k1")
	seal, _ := newSealer([]*sealKey{k}, false)
	s := newTestStore(t, addr, storeOpts{sealer: seal})
	if err := s.Store(ctx, "old", []byte("placeholder")); err != nil {
		t.Fatal(err)
	}
	if err := rawClient(t, addr).HSet(ctx, "{caddy}:v:old", "v", sealV1(t, k, "old", []byte("sealed by version 1"))).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Load(ctx, "old"); err != nil || string(v) != "sealed by version 1" {
		t.Fatalf("a version-1 value: %q, %v", v, err)
	}
	// bound to its key all the same
	if err := rawClient(t, addr).HSet(ctx, "{caddy}:v:old", "v", sealV1(t, k, "other", []byte("x"))).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "old"); err == nil {
		t.Fatal("a version-1 value of another key opened")
	}
}

// TestEncryptionReplayDetected: an older sealed value written back at its
// own key opens (it is genuine), but a node that has read or written a
// newer one there refuses it; a node that never saw the newer one cannot
// tell (what encryption at rest cannot do on its own, README.md).
func TestEncryptionReplayDetected(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	seal := testSealer(t, "k1")
	a := newTestStore(t, addr, storeOpts{sealer: seal})
	b := newTestStore(t, addr, storeOpts{sealer: seal})
	key := "pki/authorities/local/intermediate.key"
	raw := rawClient(t, addr)
	now := time.Now()
	a.gens.now = func() time.Time { return now.Add(-time.Hour) }
	if err := a.Store(ctx, key, []byte("old key")); err != nil {
		t.Fatal(err)
	}
	old, _ := raw.HGet(ctx, "{caddy}:v:"+key, "v").Bytes()
	a.gens.now = func() time.Time { return now }
	if err := a.Store(ctx, key, []byte("new key")); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Load(ctx, key); err != nil || string(v) != "new key" {
		t.Fatalf("b reads %q, %v", v, err)
	}
	// a value written by a node whose clock is a little behind is read
	b.gens.now = func() time.Time { return now.Add(-replayTolerance / 2) }
	if err := b.Store(ctx, key, []byte("newer key, slow clock")); err != nil {
		t.Fatal(err)
	}
	if v, err := a.Load(ctx, key); err != nil || string(v) != "newer key, slow clock" {
		t.Fatalf("a value from a node with a slightly slow clock: %q, %v", v, err)
	}
	// the hour-old value written back: both nodes refuse it
	if err := raw.HSet(ctx, "{caddy}:v:"+key, "v", old).Err(); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*store{"a (wrote newer)": a, "b (read newer)": b} {
		v, err := s.Load(ctx, key)
		var rb interface{ RolledBack() bool }
		if err == nil || !errors.As(err, &rb) || !rb.RolledBack() || !strings.Contains(err.Error(), "written back") {
			t.Errorf("%s: the older value written back: %q, %v", name, v, err)
		}
		if v != nil {
			t.Errorf("%s: bytes returned with the error", name)
		}
	}
	// a node that never saw the newer value cannot tell
	fresh := newTestStore(t, addr, storeOpts{sealer: seal})
	if v, err := fresh.Load(ctx, key); err != nil || string(v) != "old key" {
		t.Errorf("a fresh node: %q, %v", v, err)
	}
	// a node's own generations only go up, whatever its clock does
	a.gens.now = func() time.Time { return now.Add(-24 * time.Hour) }
	g1 := a.gens.next(key)
	if g1 <= now.UnixNano() {
		t.Errorf("generation %d after a clock step back, want above %d", g1, now.UnixNano())
	}
}
