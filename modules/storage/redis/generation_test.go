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
	// the key's index entry; the reader is another node, which never saw
	// this version-2 placeholder (TestEncryptionRollingUpgrade: one that
	// did refuses the version-1 value written over it)
	if err := newTestStore(t, addr, storeOpts{sealer: seal}).Store(ctx, "old", []byte("placeholder")); err != nil {
		t.Fatal(err)
	}
	s := newTestStore(t, addr, storeOpts{sealer: seal})
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

// TestEncryptionRollingUpgrade: a cluster whose values were sealed before
// generations (version 1, generation 0) is upgraded node by node. Nothing
// is lost: every upgraded node reads every version-1 value, and a write
// re-seals its key as version 2. But a version-1 value is older than any
// version-2 value (upgraded nodes write version 2 only), so the old value
// written back over an upgraded one (from a backup taken before the
// upgrade: the cheapest replay there is) is refused by the nodes that saw
// the newer one, as any other rollback; keys still at version 1 are not
// affected.
func TestEncryptionRollingUpgrade(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	k := testKey(t, "k1")
	seal, _ := newSealer([]*sealKey{k}, false)
	raw := rawClient(t, addr)
	// the cluster before the upgrade: two values sealed by version 1
	old := map[string][]byte{}
	for _, key := range []string{"certificates/a.crt", "certificates/b.crt"} {
		setup := newTestStore(t, addr, storeOpts{sealer: seal})
		if err := setup.Store(ctx, key, []byte("placeholder")); err != nil { // index and parents
			t.Fatal(err)
		}
		old[key] = sealV1(t, k, key, []byte("v1 "+key))
		if err := raw.HSet(ctx, "{caddy}:v:"+key, "v", old[key]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	n1 := newTestStore(t, addr, storeOpts{sealer: seal})
	n2 := newTestStore(t, addr, storeOpts{sealer: seal})
	for _, n := range []*store{n1, n2} {
		for key := range old {
			if v, err := n.Load(ctx, key); err != nil || string(v) != "v1 "+key {
				t.Fatalf("an upgraded node reads %s: %q, %v", key, v, err)
			}
		}
	}
	// n1 renews a.crt: re-sealed as version 2
	if err := n1.Store(ctx, "certificates/a.crt", []byte("v2 a")); err != nil {
		t.Fatal(err)
	}
	if b, _ := raw.HGet(ctx, "{caddy}:v:certificates/a.crt", "v").Bytes(); len(b) < 5 || b[4] != sealVersion {
		t.Fatalf("a write left version %d", b[4])
	}
	if v, err := n2.Load(ctx, "certificates/a.crt"); err != nil || string(v) != "v2 a" {
		t.Fatalf("n2 reads the renewed value: %q, %v", v, err)
	}
	// the version-1 value written back: refused by both
	if err := raw.HSet(ctx, "{caddy}:v:certificates/a.crt", "v", old["certificates/a.crt"]).Err(); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]*store{"n1 (wrote version 2)": n1, "n2 (read version 2)": n2} {
		v, err := n.Load(ctx, "certificates/a.crt")
		var rb interface{ RolledBack() bool }
		if err == nil || !errors.As(err, &rb) || !strings.Contains(err.Error(), "sealed before generations (format version 1)") {
			t.Errorf("%s: the version-1 value written back over a version-2 one: %q, %v", name, v, err)
		}
	}
	// b.crt, never rewritten, is read by every node as before
	for _, n := range []*store{n1, n2, newTestStore(t, addr, storeOpts{sealer: seal})} {
		if v, err := n.Load(ctx, "certificates/b.crt"); err != nil || string(v) != "v1 certificates/b.crt" {
			t.Fatalf("a version-1 value never rewritten: %q, %v", v, err)
		}
	}
}
