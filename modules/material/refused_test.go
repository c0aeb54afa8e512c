package material

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/trustline/trustline/internal/testpki"
)

// observed starts a source on a logger whose lines the test reads, with a
// short poll period.
func observed(t *testing.T, spec Spec[[]byte]) (*Reloadable[[]byte], *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	spec.Poll = 20 * time.Millisecond
	r, err := newReloadable(spec, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	go r.loop()
	t.Cleanup(func() { _ = r.Destruct() })
	return r, logs
}

// waitPolls waits until the source has run n more periodic checks.
func waitPolls[T any](t *testing.T, r *Reloadable[T], n uint64) {
	t.Helper()
	from := r.polls.Load()
	waitFor(t, "periodic checks", func() bool { return r.polls.Load() >= from+n })
}

func failures(logs *observer.ObservedLogs) int {
	return logs.FilterMessage("reload failed; keeping the last good version").Len()
}

// TestRefusedVersionLoggedOnce: a broken version that stays on disk is
// logged and counted once, not at every periodic check; a change of the
// file (to another broken version) is said again, and a good version
// after it is taken.
func TestRefusedVersionLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	good := testpki.NewCA(t, "one").CertPEM()
	path := testpki.WriteFile(t, dir, "ca.pem", good)
	spec := pemSpec("refused:"+path, path)
	r, logs := observed(t, Spec[[]byte]{
		Kind: spec.Kind, Name: spec.Name, Key: spec.Key, Watch: spec.Watch,
		Load: func() (*Loaded[[]byte], error) {
			l, err := spec.Load()
			if err != nil {
				return nil, err
			}
			return &Loaded[[]byte]{Value: []byte(cn(l.Value)), Certificates: l.Certificates, Digest: l.Digest, Files: l.Files}, nil
		},
	})

	testpki.WriteFile(t, dir, "ca.pem", good[:len(good)-30]) // cut inside its block
	waitFor(t, "the refused version", func() bool { return failures(logs) > 0 })
	waitPolls(t, r, 3)
	if n := failures(logs); n != 1 {
		t.Fatalf("a refused version that stays on disk was logged %d times over 3 checks, want once", n)
	}
	if n := r.stats.failed.Load(); n != 1 {
		t.Fatalf("counted %d failed reloads, want 1", n)
	}

	// another broken version: said again, once
	testpki.WriteFile(t, dir, "ca.pem", append(append([]byte(nil), good...), "junk"...))
	waitFor(t, "the second refused version", func() bool { return failures(logs) == 2 })
	waitPolls(t, r, 3)
	if n := failures(logs); n != 2 {
		t.Fatalf("two refused versions logged %d times, want 2", n)
	}

	testpki.WriteFile(t, dir, "ca.pem", testpki.NewCA(t, "two").CertPEM())
	waitFor(t, "the good version", func() bool { return string(r.Current()) == "two" })
	if n := r.stats.failed.Load(); n != 2 {
		t.Fatalf("counted %d failed reloads, want 2", n)
	}
}
