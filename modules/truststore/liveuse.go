package truststore

import (
	"cmp"
	"crypto/tls"
	"encoding/json"
	"slices"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/internal/caddyinternals"
)

// ClientAuthError is a client_auth that live_trust cannot work in: what
// goes wrong, and the change that fixes it.
type ClientAuthError struct {
	Problem, Fix string
}

func (e *ClientAuthError) Error() string { return "client_auth: " + e.Problem + "; " + e.Fix }

var (
	errLiveTrustWithPool = &ClientAuthError{
		Problem: "`trust_pool` (JSON: ca) together with `verifier live_trust`: crypto/tls would verify client certificates against the trust_pool as it was read at config load, before live_trust runs, so a CA added to the truststore later stays refused until the next config load",
		Fix:     "remove trust_pool: live_trust verifies against its own pool, reloaded live",
	}
	errLiveTrustPeerFirst = &ClientAuthError{
		Problem: "`verifier peer` is listed before `verifier live_trust`: Caddy runs the verifiers in order, and peer decides on the chain live_trust verified, so it would find none and refuse every client",
		Fix:     "list `verifier live_trust` first",
	}
)

// errLiveTrustMode: a mode in which crypto/tls verifies the chain itself.
func errLiveTrustMode(mode string) error {
	return &ClientAuthError{
		Problem: "`mode " + mode + "` with `verifier live_trust`: under that mode crypto/tls verifies every client certificate itself, before live_trust runs, and live_trust gives it no trust pool, so it verifies against the system roots and refuses your clients (unknown certificate authority)",
		Fix:     "remove `mode` (live_trust then requires a client certificate and verifies it against its live pool), or use `mode request` to let clients without a certificate in",
	}
}

// CheckClientAuth reports a client_auth in which live_trust cannot work:
// mode is the effective mode (request, require, verify_if_given,
// require_and_verify: Caddy's default filled in), trustPool whether
// crypto/tls is given a pool (trust_pool or trusted_ca_certs), verifiers
// the verifier names in order. It returns nil when live_trust is not
// among the verifiers, else a *ClientAuthError.
func CheckClientAuth(mode string, trustPool bool, verifiers []string) error {
	live := slices.Index(verifiers, "live_trust")
	if live < 0 {
		return nil
	}
	switch {
	case trustPool:
		return errLiveTrustWithPool
	case mode == "require_and_verify" || mode == "verify_if_given":
		return errLiveTrustMode(mode)
	case slices.Contains(verifiers[:live], "peer"):
		return errLiveTrustPeerFirst
	}
	return nil
}

// checkOwnPolicy runs CheckClientAuth on the connection policy this
// verifier is provisioned in, when there is one.
func checkOwnPolicy(ctx caddy.Context) error {
	pol := caddyinternals.VerifierPolicy(ctx)
	if pol == nil {
		return nil
	}
	ca := pol.ClientAuthentication
	pool := pol.TLSConfig.ClientCAs != nil || len(ca.TrustedCACerts) > 0 || len(ca.TrustedCACertPEMFiles) > 0
	return CheckClientAuth(ModeName(pol.TLSConfig.ClientAuth), pool, VerifierNames(ca.VerifiersRaw))
}

// VerifierNames returns the module names of client_auth verifiers, in
// order.
func VerifierNames(raws []json.RawMessage) []string {
	names := make([]string, 0, len(raws))
	for _, raw := range raws {
		var v struct {
			Verifier string `json:"verifier"`
		}
		_ = json.Unmarshal(raw, &v)
		names = append(names, v.Verifier)
	}
	return names
}

// ModeName is Caddy's name of a crypto/tls client auth type (request,
// require, verify_if_given, require_and_verify; none), as client_auth
// writes it.
func ModeName(t tls.ClientAuthType) string {
	return cmp.Or(modeNames[t], "none")
}

var modeNames = map[tls.ClientAuthType]string{
	tls.RequestClientCert: "request", tls.RequireAnyClientCert: "require",
	tls.VerifyClientCertIfGiven: "verify_if_given", tls.RequireAndVerifyClientCert: "require_and_verify",
}
