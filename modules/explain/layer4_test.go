package explain_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/explain"
	"github.com/trustline/trustline/modules/verify"
)

// TestExplainTerminateTLSAtLayer4 explains the examples/l4-mtls topology
// in process: terminate_tls with live_trust and peer, then passthrough
// with PROXY v2 identity TLVs and re-encryption to the backend; and the
// routes where TLS ends at layer 4 before a handler explain does not run.
func TestExplainTerminateTLSAtLayer4(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	p := newPKI(t)
	stranger := testpki.NewCA(t, "Stranger Root").Issue(t, testpki.CN("stranger"), testpki.ClientOnly())
	proxyCert, proxyKey := p.inter.Issue(t, testpki.CN("edge proxy"), testpki.ClientOnly()).WriteFiles(t, p.dir, "proxy")
	cfg := adapt(t, fmt.Sprintf(`{
	admin off
	auto_https disable_redirects
	layer4 {
		127.0.0.1:5433 {
			route {
				terminate_tls {
					connection_policy {
						client_auth {
							verifier live_trust bundle %[1]s
							verifier peer spiffe://example.org/ops/*
						}
					}
				}
				passthrough 127.0.0.1:6433 {
					name db
					proxy_protocol v2
					proxy_protocol_identity
					tls {
						client_identity pem %[2]s %[3]s
						trust_pool file %[1]s
						server_name backend.internal
					}
				}
			}
		}
		127.0.0.1:5434 {
			route {
				terminate_tls {
					connection_policy {
						client_auth {
							verifier live_trust bundle %[1]s
						}
					}
				}
				passthrough 127.0.0.1:6434 {
					proxy_protocol v2
				}
			}
		}
		127.0.0.1:5435 {
			route {
				terminate_tls {
					connection_policy {
						client_auth {
							verifier live_trust bundle %[1]s
						}
					}
				}
				proxy 127.0.0.1:6435
			}
		}
	}
}
https://localhost:8443 {
	tls %[4]s %[5]s
	respond "in"
}
`, p.rootFile, proxyCert, proxyKey, p.srvCert, p.srvKey))
	alice := chainPEM(p.alice.Cert, p.inter.Cert)
	runLayer4Cases(t, cfg, "terminate_tls", []layer4Case{
		{"admitted, TLVs and re-encryption", ":5433", alice, explain.OutcomeAdmitted, "", "",
			[]string{"PP2_TYPE_SSL", "spiffe://example.org/ops/alice", "CN=alice", "TLSv1.3", "edge proxy", "trust_pool", "backend.internal", "127.0.0.1:6433", "re-encrypt"}},
		{"refused by peer", ":5433", chainPEM(p.bob.Cert, p.inter.Cert), explain.OutcomeRefusedHandshake, "not_allowed", "bad certificate", nil},
		{"unknown CA refused by live_trust", ":5433", chainPEM(stranger.Cert), explain.OutcomeRefusedHandshake, "unknown_authority", "bad certificate", nil},
		{"no certificate", ":5433", "", explain.OutcomeRefusedHandshake, "no_certificate", "certificate required", nil},
		{"plain forward, no identity TLV", ":5434", alice, explain.OutcomeAdmitted, "", "",
			[]string{"127.0.0.1:6434", "plain TCP", "proxy_protocol_identity is off"}},
		{"caddy-l4's proxy after terminate_tls", ":5435", alice, explain.OutcomeUndetermined, "", "", []string{"proxy"}},
	})
}

// layer4Case is a client explained on a layer-4 listener of a config.
type layer4Case struct {
	name, listen, chain string
	outcome, reason     string
	alert               string
	want                []string // in the steps' details and checks
}

// runLayer4Cases explains each case against cfg offline; by is the
// handler that ends TLS on its routes, which the steps must name (and
// only it: a report under caddy-l4's tls never names terminate_tls).
func runLayer4Cases(t *testing.T, cfg []byte, by string, cases []layer4Case) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := explain.Offline(cfg, request(t, map[string]any{"server_name": "localhost", "listen": tc.listen, "chain": tc.chain}), "test")
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			_ = rep.WriteTable(&b)
			v := rep.Verdict
			if v.Outcome != tc.outcome || v.Reason != tc.reason || v.Alert != tc.alert {
				t.Errorf("verdict %+v, want %s %q alert %q\n%s", v, tc.outcome, tc.reason, tc.alert, b.String())
			}
			all := stepsText(rep.Steps)
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("the report lacks %q\n%s", w, b.String())
				}
			}
			if tc.outcome == explain.OutcomeRefusedHandshake && !strings.Contains(all, by) {
				t.Errorf("the refusal does not say %s decided\n%s", by, b.String())
			}
			if by != "terminate_tls" && strings.Contains(all, "terminate_tls") {
				t.Errorf("the report names terminate_tls, which the route does not run\n%s", b.String())
			}
		})
	}
}

func stepsText(steps []verify.Step) string {
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "%s %s %s\n", s.Name, s.Detail, s.Reason)
		for _, c := range s.Checks {
			fmt.Fprintf(&b, "  %s %s %s\n", c.Name, c.Want, c.Have)
		}
	}
	return b.String()
}

// TestExplainCaddyL4TLSAtLayer4 explains caddy-l4's own tls handler as
// terminate_tls is explained: its connection policies run the same
// handshake (live_trust, then peer), and a passthrough after it sends the
// identity TLVs of that handshake, as the handler reads them from the
// connection state caddy-l4's tls handler records.
func TestExplainCaddyL4TLSAtLayer4(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	p := newPKI(t)
	stranger := testpki.NewCA(t, "Stranger Root").Issue(t, testpki.CN("stranger"), testpki.ClientOnly())
	cfg := adapt(t, fmt.Sprintf(`{
	admin off
	auto_https disable_redirects
	layer4 {
		127.0.0.1:5443 {
			route {
				tls {
					connection_policy {
						client_auth {
							verifier live_trust bundle %[1]s
							verifier peer spiffe://example.org/ops/*
						}
					}
				}
				passthrough 127.0.0.1:6443 {
					proxy_protocol v2
					proxy_protocol_identity
				}
			}
		}
		127.0.0.1:5444 {
			route {
				tls {
					connection_policy {
						client_auth {
							verifier live_trust bundle %[1]s
						}
					}
				}
				proxy 127.0.0.1:6444
			}
		}
	}
}
https://localhost:8443 {
	tls %[2]s %[3]s
	respond "in"
}
`, p.rootFile, p.srvCert, p.srvKey))
	alice := chainPEM(p.alice.Cert, p.inter.Cert)
	runLayer4Cases(t, cfg, "caddy-l4's tls handler", []layer4Case{
		{"admitted, TLVs", ":5443", alice, explain.OutcomeAdmitted, "", "",
			[]string{"caddy-l4's tls handler", "PP2_TYPE_SSL", "spiffe://example.org/ops/alice", "CN=alice", "127.0.0.1:6443", "plain TCP"}},
		{"refused by peer", ":5443", chainPEM(p.bob.Cert, p.inter.Cert), explain.OutcomeRefusedHandshake, "not_allowed", "bad certificate", nil},
		{"unknown CA refused by live_trust", ":5443", chainPEM(stranger.Cert), explain.OutcomeRefusedHandshake, "unknown_authority", "bad certificate", nil},
		{"caddy-l4's proxy after caddy-l4's tls", ":5444", alice, explain.OutcomeUndetermined, "", "",
			[]string{"after caddy-l4's tls handler", "proxy"}},
	})

	// without --listen, the listener whose route terminates TLS with
	// caddy-l4's tls (then runs caddy-l4's proxy) is the one that takes
	// the name
	t.Run("listener picked without --listen", func(t *testing.T) {
		cfg := adapt(t, fmt.Sprintf(`{
	admin off
	auto_https disable_redirects
	layer4 {
		127.0.0.1:5445 {
			route {
				tls
				proxy 127.0.0.1:6445
			}
		}
	}
}
https://other.example:8443 {
	tls %[1]s %[2]s
	respond "in"
}
`, p.srvCert, p.srvKey))
		rep, err := explain.Offline(cfg, request(t, map[string]any{"server_name": "localhost", "chain": alice}), "test")
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Steps) == 0 || !strings.Contains(rep.Steps[0].Detail, "127.0.0.1:5445") || !strings.Contains(stepsText(rep.Steps), "after caddy-l4's tls handler") {
			var b strings.Builder
			_ = rep.WriteTable(&b)
			t.Errorf("want the layer-4 listener on 127.0.0.1:5445, its client admitted by caddy-l4's tls handler\n%s", b.String())
		}
	})
}
