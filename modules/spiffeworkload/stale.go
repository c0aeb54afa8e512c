package spiffeworkload

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/trustline/trustline/modules/material"
)

// DefaultPoolMaxStale is how long a trust pool's last bundles count as
// current while the agent is unreachable, when max_stale is not set.
const DefaultPoolMaxStale = 24 * time.Hour

// follower is a module following the agent's answers: its source
// reloads after each one, and its rule says when the last answer it serves
// counts as stale. A stale answer stays in force (see README.md, "When the
// agent goes away"); it is flagged: a warning, the stale gauge, Stale()
// for the topology report.
type follower struct {
	// StaleSource is the module as Stale reports it; Since and Reason
	// are zero while it is fresh (agent.mu).
	StaleSource
	reload   func() error     // reloads the module's source
	maxStale time.Duration    // how long the agent may be unreachable; 0: no limit
	notAfter func() time.Time // the expiry of the SVID served; nil for bundles
}

// check says why the answer is stale at now, or "" when it is not;
// lostAt is when the agent became unreachable, zero while it is up.
func (r *follower) check(now, lostAt time.Time) string {
	if r.notAfter != nil {
		if na := r.notAfter(); now.After(na) {
			return "the X509-SVID expired at " + material.TimeString(na)
		}
	}
	if r.maxStale > 0 && !lostAt.IsZero() && now.Sub(lostAt) > r.maxStale {
		return fmt.Sprintf("the Workload API has been unreachable for longer than max_stale (%s)", r.maxStale)
	}
	return ""
}

// follow adds f to the followers, reloaded after each answer and checked
// on each monitor tick; the returned func removes it.
func (a *agent) follow(f *follower) (cancel func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f.Socket = a.addr
	a.followers[f] = true
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(a.followers, f)
	}
}

// checkStale applies every rule at the agent's clock: a rule that turns
// stale is logged once (a warning), one that is fresh again once (info).
func (a *agent) checkStale() {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for r := range a.followers {
		reason := r.check(now, a.lostAt)
		switch {
		case reason != "" && r.Since.IsZero():
			r.Since, r.Reason = now, reason
			fields := []zap.Field{zap.String("source", r.Source), zap.String("reason", reason)}
			if !a.lostAt.IsZero() {
				fields = append(fields, zap.Duration("unreachable_for", now.Sub(a.lostAt).Round(time.Second)))
			}
			a.logger.Warn("the last answer of the Workload API is stale; still in force until the agent is back", fields...)
		case reason == "" && !r.Since.IsZero():
			a.logger.Info("the answer of the Workload API is fresh again", zap.String("source", r.Source),
				zap.Duration("stale_for", now.Sub(r.Since).Round(time.Second)))
			r.Since, r.Reason = time.Time{}, ""
		}
	}
}

// isStale tells whether any rule counts the connection's answer stale.
func (a *agent) isStale() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for r := range a.followers {
		if !r.Since.IsZero() {
			return true
		}
	}
	return false
}

// now is the agent's clock (time.Now unless a test moved it).
func (a *agent) now() time.Time {
	if f := a.clock.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// StaleSource is a module whose last answer from the Workload API counts
// as stale: still in force, flagged.
type StaleSource struct {
	Socket string // the Workload API address
	Pool   bool   // a trust pool's bundles (else a keystore's SVID)
	// Source names the module: "trust pool spiffe_workload <socket>
	// [<trust domains>]" or "keystore spiffe_workload <socket> <spiffe_id
	// or default_svid> <usage>".
	Source string
	Reason string    // why: the agent unreachable for longer than max_stale, or the SVID expired
	Since  time.Time // when it turned stale
}

// Stale lists the stale sources of every connection of this process,
// sorted by socket and source, each once (the old and the new config of an
// admin reload share one connection).
func Stale() []StaleSource {
	liveMu.Lock()
	defer liveMu.Unlock()
	var out []StaleSource
	for a := range liveAgents {
		a.mu.Lock()
		for r := range a.followers {
			if !r.Since.IsZero() {
				out = append(out, r.StaleSource)
			}
		}
		a.mu.Unlock()
	}
	slices.SortFunc(out, func(x, y StaleSource) int {
		return cmp.Or(cmp.Compare(x.Socket, y.Socket), cmp.Compare(x.Source, y.Source))
	})
	return slices.CompactFunc(out, func(x, y StaleSource) bool { return x.Socket == y.Socket && x.Source == y.Source })
}
