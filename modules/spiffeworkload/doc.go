// Package spiffeworkload reads identity and trust from the SPIFFE Workload
// API (a SPIRE agent, or any other implementation): a keystore source
// (trustline.keystore.spiffe_workload) that serves the workload's current
// X509-SVID and key, and a trust pool source
// (tls.ca_pool.source.spiffe_workload) that serves the X.509 bundles the
// agent streams, each trust domain's authorities scoped to that domain
// (verify.Anchors). Every module that names the same socket shares
// one agent connection (a caddy.UsagePool), across admin reloads too; the
// last one out closes it.
package spiffeworkload
