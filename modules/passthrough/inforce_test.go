package passthrough

import (
	"encoding/json"
	"testing"
)

// TestInForce: a handler registered under its configuration is found
// from the config's JSON whatever its key order, the newest one during
// a reload, and no longer once cleaned up.
func TestInForce(t *testing.T) {
	load := func(raw string) *TerminateTLS {
		var h TerminateTLS
		if err := json.Unmarshal([]byte(raw), &h); err != nil {
			t.Fatal(err)
		}
		h.key = configKey(&h)
		return &h
	}
	const written = `{"handshake_timeout":5000000000,"connection_policies":[{"client_authentication":{"mode":"require_and_verify","ca":{"provider":"file","pem_files":["a.pem"]}}}]}`
	const readBack = `{"connection_policies":[{"client_authentication":{"ca":{"pem_files":["a.pem"],"provider":"file"},"mode":"require_and_verify"}}],"handler":"terminate_tls","handshake_timeout":5000000000}`
	old, current := load(written), load(written)
	old.register()
	current.register()
	if got := InForce(json.RawMessage(readBack)); got != current {
		t.Fatalf("InForce = %p, want the newest handler %p", got, current)
	}
	if got := InForce(json.RawMessage(`{"handler":"terminate_tls","handshake_timeout":1}`)); got != nil {
		t.Fatalf("another configuration found %p", got)
	}
	_ = current.Cleanup()
	if got := InForce(json.RawMessage(readBack)); got != old {
		t.Fatalf("after the newest is cleaned up, InForce = %p, want %p", got, old)
	}
	_ = old.Cleanup()
	if got := InForce(json.RawMessage(readBack)); got != nil {
		t.Fatalf("after cleanup, InForce = %p", got)
	}
}
