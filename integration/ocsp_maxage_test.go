package integration

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// TestPeerOCSPMaxAge: an OCSP responder (or whoever sits on the plain-HTTP
// path to it) replays "good" answers signed two hours ago, without
// nextUpdate, as an old answer kept from before a revocation would be.
// Requests carry no nonce, so only the answer's age gives it away: the
// site that fails closed refuses the client, the ocsp_soft_fail site lets
// it through with the reason in the log, and a site whose ocsp_max_age
// allows three hours takes the answer as good. A replayed "revoked"
// answer is taken whatever its age.
func TestPeerOCSPMaxAge(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Replay Test CA")
	replay := revocationtest.NewResponder(t, ca, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	replay.SetNextUpdate(-1)
	alice := ca.Issue(t, testpki.CN("alice"), testpki.ClientOnly(), testpki.OCSPServer(replay.URL))
	bob := ca.Issue(t, testpki.CN("bob"), testpki.ClientOnly(), testpki.OCSPServer(replay.URL))
	replay.Set(alice.Cert, ocsp.Good)
	replay.Set(bob.Cert, ocsp.Revoked)
	srv := ca.Issue(t, testpki.CN("localhost"), testpki.DNS("localhost"), testpki.IP("127.0.0.1"), testpki.ServerOnly())
	srvCert, srvKey := srv.WriteFiles(t, dir, "server")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.CertPEM())

	hard, soft, tolerant := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	c := bench.Start(t, fmt.Sprintf(`{
	admin {$TL_ADMIN}
	skip_install_trust
	auto_https disable_redirects
}
https://localhost:%[1]s {
	tls %[4]s %[5]s {
		client_auth {
			trust_pool file %[6]s
			verifier peer {
				ocsp
			}
		}
	}
	respond "in"
}
https://localhost:%[2]s {
	tls %[4]s %[5]s {
		client_auth {
			trust_pool file %[6]s
			verifier peer {
				ocsp
				ocsp_soft_fail
			}
		}
	}
	respond "in"
}
https://localhost:%[3]s {
	tls %[4]s %[5]s {
		client_auth {
			trust_pool file %[6]s
			verifier peer {
				ocsp
				ocsp_max_age 3h
			}
		}
	}
	respond "in"
}
`, bench.Port(hard), bench.Port(soft), bench.Port(tolerant), srvCert, srvKey, caFile))

	cl := chainClient{serverCA: ca.Pool()}
	if code, body, err := cl.get(hard, "/", alice); err == nil {
		t.Fatalf("a two-hour-old good answer without nextUpdate let alice through a fail-closed site: %d %q", code, body)
	}
	c.WaitLog(t, `OCSP status unavailable for certificate \"CN=alice\"`, 5*time.Second) // JSON-escaped
	c.WaitLog(t, "good answer too old", time.Second)
	if code, body, err := cl.get(soft, "/", alice); err != nil || code != 200 {
		t.Fatalf("alice on the ocsp_soft_fail site: %d %q %v", code, body, err)
	}
	c.WaitLog(t, "letting the client through (ocsp_soft_fail)", 5*time.Second)
	if code, body, err := cl.get(tolerant, "/", alice); err != nil || code != 200 {
		t.Fatalf("alice on the ocsp_max_age 3h site: %d %q %v", code, body, err)
	}
	for _, addr := range []string{hard, soft, tolerant} {
		if code, body, err := cl.get(addr, "/", bob); err == nil {
			t.Fatalf("site %s: an old revoked answer let bob through: %d %q", addr, code, body)
		}
	}
	m := c.Metrics(t)
	for sample, want := range map[string]float64{
		`trustline_peer_revocation_checks_total{method="ocsp",result="unavailable"}`: 1,
		`trustline_peer_revocation_checks_total{method="ocsp",result="soft_fail"}`:   1,
		`trustline_peer_revocation_checks_total{method="ocsp",result="good"}`:        1,
		`trustline_peer_revocation_checks_total{method="ocsp",result="revoked"}`:     3,
	} {
		if v := metricValue(t, m, sample); v != want {
			t.Errorf("%s = %v, want %v", sample, v, want)
		}
	}
}
