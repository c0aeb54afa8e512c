package material

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
)

// counted is spec with a counter of its loads.
func counted[T any](spec Spec[T], loads *atomic.Int32) Spec[T] {
	load := spec.Load
	spec.Load = func() (*Loaded[T], error) {
		loads.Add(1)
		return load()
	}
	return spec
}

// TestAcquireLoadsOnce: many sites of one config load on one source (500
// sites on one bundle) read it once; a new config load reads it again
// only when its files changed since, and then sees the new version at
// once.
func TestAcquireLoadsOnce(t *testing.T) {
	dir := t.TempDir()
	path := testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "one").CertPEM())
	var loads atomic.Int32
	spec := counted(pemSpec("once:"+path, path), &loads)
	spec.Poll = 20 * time.Millisecond
	ctx := testCtx(t)
	const sites = 50
	for range sites {
		if _, err := Acquire(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for range sites + 2 {
			Release(spec.Key)
		}
	})
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d sites on one source loaded it %d times, want once", sites, n)
	}

	// an admin reload with the files unchanged: shared as it is
	r, err := Acquire(testCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("a new config load re-read unchanged files: %d loads", n)
	}

	// changed on disk: the new config sees the new version, read once
	// (by whichever comes first, the watcher or the config load)
	testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "two").CertPEM())
	if _, err := Acquire(testCtx(t), spec); err != nil {
		t.Fatal(err)
	}
	if got := cn(r.Current()); got != "two" {
		t.Fatalf("a config loaded after the change sees %q", got)
	}
	waitPolls(t, r, 2)
	if n := loads.Load(); n != 2 {
		t.Fatalf("one change read %d times", n-1)
	}
}

// TestAcquireRemoteOncePerConfig: a source with no files (a remote
// endpoint, storage) is read again once per config load, not once per
// site.
func TestAcquireRemoteOncePerConfig(t *testing.T) {
	var loads atomic.Int32
	spec := counted(Spec[int]{Kind: "test", Name: "remote", Key: "remote-once",
		Load: func() (*Loaded[int], error) { return &Loaded[int]{Value: 1}, nil }}, &loads)
	for config := 1; config <= 2; config++ {
		ctx := testCtx(t)
		for range 20 {
			if _, err := Acquire(ctx, spec); err != nil {
				t.Fatal(err)
			}
			defer Release(spec.Key)
		}
		if n := loads.Load(); n != int32(config) {
			t.Fatalf("after config load %d: %d loads, want %d", config, n, config)
		}
	}
}
