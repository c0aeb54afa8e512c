package caddyinternals

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestRunningConfig: RunningConfig, the go:linkname to Caddy's unexported
// readConfig, returns the config Caddy runs, as GET /config/ does.
func TestRunningConfig(t *testing.T) {
	cfg := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"t":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"static_response","body":"x"}]}]}}}}}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Load([]byte(`{"admin":{"disabled":true}}`), true) })
	got, err := RunningConfig()
	if err != nil {
		t.Fatalf("caddy.readConfig (go:linkname, Caddy %s): %v", CaddyVersion, err)
	}
	var a, b any
	_ = json.Unmarshal([]byte(cfg), &a)
	if err := json.Unmarshal(got, &b); err != nil {
		t.Fatalf("caddy.readConfig (go:linkname, Caddy %s) returned no JSON: %v: %s", CaddyVersion, err, got)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Errorf("caddy.readConfig (go:linkname, Caddy %s) returned\n%s\nnot the running config\n%s", CaddyVersion, jb, ja)
	}
}
