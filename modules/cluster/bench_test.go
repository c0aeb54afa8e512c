package cluster

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/trustline/trustline/modules/keystore"
)

// BenchmarkIssueIdentities issues 1,000 client identities (internal
// keystore, each its own SPIFFE ID) across one or three nodes sharing one
// Redis, one goroutine per node, each identity as a config load issues it:
// read the storage, take the identity's lock, read the CA's intermediate
// and key from Redis, sign, store, release. One op is 1,000 identities.
//
//	go test ./modules/cluster -run '^$' -bench IssueIdentities -benchtime 3x
func BenchmarkIssueIdentities(b *testing.B) {
	addr := startRedis(b)
	const total = 1000
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			var ns []*node
			for i := range nodes {
				ns = append(ns, startNode(b, fmt.Sprintf("n%d", i), nodeOpts{redisAddr: addr, cluster: `{"check_interval": 3600000000000}`}))
			}
			round := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				round++
				var wg sync.WaitGroup
				errs := make(chan error, nodes)
				for i, n := range ns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := i; j < total; j += nodes {
							if err := issueOne(n, fmt.Sprintf("spiffe://cluster.local/bench/%d/%d/%d", nodes, round, j)); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "identities/s")
		})
	}
}

// issueOne provisions an internal keystore source for a new identity on
// node n (which issues it) and releases it.
func issueOne(n *node, spiffeID string) error {
	holder := &struct {
		Raw json.RawMessage `json:"raw" caddy:"namespace=trustline.keystore inline_key=source"`
	}{Raw: json.RawMessage(fmt.Sprintf(`{"source":"internal","spiffe_id":%q}`, spiffeID))}
	src, err := keystore.Load(n.ctx, holder, "Raw", keystore.UsageClientAuth)
	if err != nil {
		return err
	}
	if src.KeyPair().Leaf == nil {
		return fmt.Errorf("%s: no identity", spiffeID)
	}
	if c, ok := src.(interface{ Cleanup() error }); ok {
		return c.Cleanup()
	}
	return nil
}
