package material

import (
	"sync/atomic"
	"testing"
)

// TestJoinOnlyDoesNotRefresh: a source with no files is read again for
// each new config's context (refreshFor), but a JoinOnly context (explain
// provisioning a handler beside the running config) joins it as it is:
// no fetch, and the running config's version stays.
func TestJoinOnlyDoesNotRefresh(t *testing.T) {
	var loads atomic.Int32
	spec := Spec[int]{Kind: "test", Name: "endpoint", Key: "test-join-only",
		Load: func() (*Loaded[int], error) {
			n := loads.Add(1)
			return &Loaded[int]{Value: int(n), Digest: [32]byte{byte(n)}}, nil
		},
	}
	r, err := Acquire(testCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer Release(spec.Key)
	if _, err := Acquire(JoinOnly(testCtx(t)), spec); err != nil {
		t.Fatal(err)
	}
	Release(spec.Key)
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads after a JoinOnly Acquire, want 1 (joined as it is)", n)
	}
	if _, err := Acquire(testCtx(t), spec); err != nil {
		t.Fatal(err)
	}
	Release(spec.Key)
	if n := loads.Load(); n != 2 {
		t.Fatalf("%d loads after a new config's Acquire, want 2 (the check of this test)", n)
	}
	if v := *r.current.Load(); v.Value != 2 {
		t.Fatalf("current %d, want 2", v.Value)
	}
}
