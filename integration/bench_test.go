package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
)

// TestBenchSmoke starts the suite's binary, lists its modules, serves a
// site, reloads it through the admin API and checks that a broken reload
// leaves the running config in place.
func TestBenchSmoke(t *testing.T) {
	site := bench.FreeAddr(t)
	c := bench.Start(t, `{
	admin {$TL_ADMIN}
	skip_install_trust
}
http://`+site+` {
	respond "one"
}
`)
	out, err := c.Command(t, "list-modules")
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	for _, mod := range []string{"layer4", "tls.handshake_match.sni"} {
		if !strings.Contains(out, mod) {
			t.Errorf("list-modules lacks %s", mod)
		}
	}
	if body, _, _ := bench.Curl(t, "http://"+site+"/"); body != "one" {
		t.Fatalf("got %q, want %q", body, "one")
	}
	if err := c.Load(t, "{\n\tadmin {$TL_ADMIN}\n\tskip_install_trust\n}\nhttp://"+site+" {\n\trespond \"two\"\n}\n"); err != nil {
		t.Fatal(err)
	}
	if body, _, _ := bench.Curl(t, "http://"+site+"/"); body != "two" {
		t.Fatalf("after reload: got %q, want %q", body, "two")
	}
	if err := c.Load(t, "http://"+site+" {\n\tno_such_directive\n}\n"); err == nil {
		t.Fatal("a config with an unknown directive was accepted")
	}
	if body, _, _ := bench.Curl(t, "http://"+site+"/"); body != "two" {
		t.Fatalf("after a refused reload: got %q, want %q", body, "two")
	}
	c.WaitLog(t, "load complete", 5*time.Second)
}
