package topology

import (
	"cmp"
	"os"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/trustline/trustline/modules/material"
)

// KindWorkloadStale: a spiffe_workload source of the running instance
// serves a stale answer (the agent gone for longer than max_stale, or the
// SVID expired).
const KindWorkloadStale = "spiffe_workload_stale"

// workloadStale adds a warning at path, the config of a spiffe_workload
// trust pool (pool) or keystore reading socket (empty:
// SPIFFE_ENDPOINT_SOCKET), for each such source of the running instance
// whose last answer counts as stale.
func (a *analyzer) workloadStale(pool bool, socket, path string) {
	if a.opts.StaleWorkloads == nil {
		return
	}
	socket = cmp.Or(socket, os.Getenv(workloadapi.SocketEnv))
	what := "X509-SVID"
	if pool {
		what = "bundles"
	}
	for _, s := range a.opts.StaleWorkloads() {
		if s.Socket != socket || s.Pool != pool {
			continue
		}
		a.finding(SeverityWarning, KindWorkloadStale, path,
			s.Source+" serves stale "+what+" since "+material.TimeString(s.Since)+": "+s.Reason+"; they stay in force",
			"bring the SPIFFE Workload API at "+socket+" back (is the SPIRE agent running, can this process reach the socket?): "+
				"until then bundle changes (an authority removed or rotated) and SVID rotations do not reach this instance")
	}
}
