package material

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/internal/testpki"
)

func pemSpec(key string, files ...string) Spec[[]*x509.Certificate] {
	return Spec[[]*x509.Certificate]{
		Kind: "test", Name: key, Key: key, Watch: files,
		Load: func() (*Loaded[[]*x509.Certificate], error) {
			paths, err := ExpandPaths(files)
			if err != nil {
				return nil, err
			}
			datas, digest, err := ReadFiles(paths)
			if err != nil {
				return nil, err
			}
			var certs []*x509.Certificate
			for _, d := range datas {
				c, err := ParsePEMCertificates(d)
				if err != nil {
					return nil, err
				}
				certs = append(certs, c...)
			}
			return &Loaded[[]*x509.Certificate]{Value: certs, Certificates: certs, Digest: digest, Files: paths}, nil
		},
	}
}

func testCtx(t *testing.T) caddy.Context {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func cn(certs []*x509.Certificate) string {
	var names []string
	for _, c := range certs {
		names = append(names, c.Subject.CommonName)
	}
	return strings.Join(names, ",")
}

func TestReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "one").CertPEM())
	spec := pemSpec(path, path)
	r, err := Acquire(testCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer Release(spec.Key)
	var changes atomic.Int32
	r.OnChange(func() { changes.Add(1) })
	if got := cn(r.Current()); got != "one" {
		t.Fatalf("initial: %s", got)
	}

	testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "two").CertPEM()) // atomic rename
	waitFor(t, "the renamed file", func() bool { return cn(r.Current()) == "two" })

	testpki.WriteFile(t, dir, "ca.pem", []byte("-----BEGIN CERTIFICATE-----\nbroken\n"))
	waitFor(t, "a failed reload", func() bool { return r.stats.failed.Load() > 0 })
	if got := cn(r.Current()); got != "two" {
		t.Fatalf("after a broken file: %s, want the last good (two)", got)
	}

	// in-place write (no rename)
	if err := os.WriteFile(path, testpki.NewCA(t, "three").CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rewritten file", func() bool { return cn(r.Current()) == "three" })
	// listeners run after the swap: wait for the second notification
	waitFor(t, "two change notifications", func() bool { return changes.Load() == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := changes.Load(); n != 2 {
		t.Fatalf("%d change notifications, want 2 (a failed or unchanged reload must not notify)", n)
	}
}

// TestKubernetesSymlinkSwap mimics a projected secret: name -> ..data/name,
// ..data -> ..<timestamp>; an update swaps the ..data link.
func TestKubernetesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	write := func(version, name string) {
		d := filepath.Join(dir, ".."+version)
		testpki.WriteFile(t, d, "ca.crt", testpki.NewCA(t, name).CertPEM())
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(".."+version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("v1", "one")
	if err := os.Symlink("..data/ca.crt", filepath.Join(dir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	spec := pemSpec(dir, dir)
	r, err := Acquire(testCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer Release(spec.Key)
	if got := cn(r.Current()); got != "one" {
		t.Fatalf("initial: %q", got)
	}
	write("v2", "two")
	waitFor(t, "the ..data swap", func() bool { return cn(r.Current()) == "two" })
}

func TestSharedAcrossConfigsAndStopped(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	path := testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "one").CertPEM())
	spec := pemSpec("shared:"+path, path)
	a, err := Acquire(testCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Acquire(testCtx(t), spec) // the new config of an admin reload
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("two configs with the same source got two watchers")
	}
	Release(spec.Key) // the old config is cleaned up
	select {
	case <-a.done:
		t.Fatal("watcher stopped while a config still uses it")
	default:
	}
	Release(spec.Key)
	select {
	case <-a.done:
	case <-time.After(2 * time.Second):
		t.Fatal("watcher still running after the last release")
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })

	// a broken source is never acquired and leaves nothing behind
	bad := pemSpec("bad", filepath.Join(dir, "missing.pem"))
	if _, err := Acquire(testCtx(t), bad); err == nil {
		t.Fatal("a missing file was accepted")
	}
	if _, ok := pool.References("bad"); ok {
		t.Fatal("a failed Acquire left an entry in the pool")
	}
}

func TestExpandPaths(t *testing.T) {
	dir := t.TempDir()
	testpki.WriteFile(t, dir, "a.pem", nil)
	testpki.WriteFile(t, dir, "b.crt", nil)
	testpki.WriteFile(t, dir, "notes.txt", nil)
	got, err := ExpandPaths([]string{dir, filepath.Join(dir, "*.pem")})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{filepath.Join(dir, "*.der"), filepath.Join(dir, "nope"), t.TempDir()} {
		if _, err := ExpandPaths([]string{bad}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// TestReleasedHeldKeepsLastGood: a handshake of a config that is being
// cleaned up may still read its source. After Release (and after the
// last Release stopped the watcher) Src stays and answers with the last
// good version; a stopped source reloads no more.
func TestReleasedHeldKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "one").CertPEM())
	spec := pemSpec("held:"+path, path)
	var old, next Held[[]*x509.Certificate]
	if err := old.Acquire(testCtx(t), spec); err != nil {
		t.Fatal(err)
	}
	if err := next.Acquire(testCtx(t), spec); err != nil { // an admin reload
		t.Fatal(err)
	}
	src := old.Src
	old.Release() // the old config is cleaned up
	old.Release() // twice: must not give back the new config's reference
	if old.Src != src {
		t.Fatalf("Release changed Src to %v", old.Src)
	}
	if got := cn(old.Src.Current()); got != "one" {
		t.Fatalf("after Release: %q, want the last good version", got)
	}
	select {
	case <-src.done:
		t.Fatal("a second Release of one hold stopped the watcher the new config still uses")
	default:
	}

	// still live for the new config: a change is seen through both
	testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "two").CertPEM())
	waitFor(t, "the new version", func() bool { return cn(next.Src.Current()) == "two" })
	if got := cn(old.Src.Current()); got != "two" {
		t.Fatalf("the released hold reads %q, want the current version", got)
	}

	next.Release() // the last user: the watcher stops
	select {
	case <-src.done:
	case <-time.After(2 * time.Second):
		t.Fatal("watcher still running after the last release")
	}
	for _, h := range []*Held[[]*x509.Certificate]{&old, &next} {
		if h.Src == nil || cn(h.Src.Current()) != "two" {
			t.Fatal("a stopped source lost its last good version")
		}
	}
	testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "three").CertPEM())
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := cn(src.Current()); got != "two" {
		t.Fatalf("a stopped source reloaded: %q", got)
	}
}

// TestCurrentDuringRelease: readers of a config's source (handshakes) run
// while the config is cleaned up and the source reloads; run with -race.
// Every read returns a good version, none panics.
func TestCurrentDuringRelease(t *testing.T) {
	dir := t.TempDir()
	path := testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "one").CertPEM())
	spec := pemSpec("race:"+path, path)
	for round := range 20 {
		var h Held[[]*x509.Certificate]
		if err := h.Acquire(testCtx(t), spec); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var bad atomic.Int32
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for range 2000 {
					if len(h.Src.Current()) != 1 {
						bad.Add(1)
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if round%2 == 0 {
				_ = h.Src.Reload()
			}
			h.Release()
		}()
		close(start)
		wg.Wait()
		if bad.Load() > 0 {
			t.Fatalf("round %d: %d reads without a good version", round, bad.Load())
		}
	}
}
