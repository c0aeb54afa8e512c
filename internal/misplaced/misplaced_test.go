package misplaced

import "testing"

func TestHint(t *testing.T) {
	for word, want := range map[string]string{
		"peer_authorize": "; peer_authorize is a site directive: put it in the site block, beside `tls` (it decides per request, on the identity the handshake verified)",
		"crl_soft_fail":  "; crl_soft_fail is an option of `verifier peer`: put it in `verifier peer { ... }` inside `tls { client_auth { ... } }` (revocation is checked at the handshake)",
		"colour":         "",
	} {
		if got := Hint(word); got != want {
			t.Errorf("Hint(%q) = %q, want %q", word, got, want)
		}
	}
}
