package redis

import (
	"fmt"
	"sync"
	"time"
)

// replayTolerance is how much older than the newest value a node has seen
// at a key a sealed value may be and still be read (the nodes' clocks may
// disagree by that much); older, it is taken for an older sealed value
// written back in Redis, and refused.
const replayTolerance = 5 * time.Minute

// generations remembers, per storage key, the newest generation of a
// sealed value this node read or wrote, to notice an older sealed value
// written back at a key. In memory only (README.md).
type generations struct {
	mu   sync.Mutex
	seen map[string]int64
	now  func() time.Time
}

func newGenerations() *generations {
	return &generations{seen: map[string]int64{}, now: time.Now}
}

// next is the generation of a value written at key now: the clock, raised
// above any generation seen at key.
func (g *generations) next(key string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(g.now().UnixNano(), g.seen[key]+1)
}

// wrote records that gen was stored at key.
func (g *generations) wrote(key string, gen int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seen[key] = max(g.seen[key], gen)
}

// read checks the generation of a value read at key against the newest
// one seen there, and records it; a value older by more than
// replayTolerance is a *rolledBackError. A version-1 value (generation 0)
// is older than any version-2 value, which is all this build writes.
func (g *generations) read(key string, gen int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	prev := g.seen[key]
	if (gen == 0 && prev > 0) || gen < prev-int64(replayTolerance) {
		return &rolledBackError{key: key, gen: gen, seen: prev}
	}
	g.seen[key] = max(prev, gen)
	return nil
}

// rolledBackError is a sealed value older than one this node has already
// read or written at the same key.
type rolledBackError struct {
	key       string
	gen, seen int64
}

func (e *rolledBackError) Error() string {
	written := "was written at " + genTime(e.gen)
	if e.gen == 0 {
		written = "was sealed before generations (format version 1)"
	}
	return fmt.Sprintf("value at %q %s, before the value this node already read or wrote there (written at %s): "+
		"an older sealed value written back in Redis? refused", e.key, written, genTime(e.seen))
}

// RolledBack marks the error for readers that cannot import this package
// (castore tests for `interface{ RolledBack() bool }`).
func (e *rolledBackError) RolledBack() bool { return true }

func genTime(gen int64) string { return time.Unix(0, gen).UTC().Format(time.RFC3339Nano) }
