package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
)

// TestDemo runs scripts/demo.sh (the README's first command) and follows
// the instructions it prints, with curl.
func TestDemo(t *testing.T) {
	bench.Need(t, "openssl")
	dir := t.TempDir()
	admin, site := bench.FreeAddr(t), bench.FreeAddr(t)
	p := bench.StartProcessEnv(t, []string{
		"TRUSTLINE_CADDY=" + bench.Binary(t),
		"DEMO_DIR=" + dir,
		"DEMO_PORT=" + bench.Port(site),
		"TL_ADMIN=" + admin,
	}, bench.RepoPath("scripts", "demo.sh"))
	p.WaitLog(t, "Ctrl-C stops Caddy", 30*time.Second)
	bench.WaitPort(t, site, 30*time.Second)

	url := "https://localhost:" + bench.Port(site) + "/"
	curl := func(name string) (string, bool) {
		out, _, code := bench.Curl(t, "-k", "--fail", "--cert", filepath.Join(dir, name+".crt"), "--key", filepath.Join(dir, name+".key"), url)
		return out, code == 0
	}
	accepted := func(name string) func() (bool, string) {
		return func() (bool, string) { out, ok := curl(name); return ok, out }
	}
	refused := func(name string) func() (bool, string) {
		return func() (bool, string) { out, ok := curl(name); return !ok, "accepted: " + out }
	}
	eventually(t, 5*time.Second, "alice (team A) accepted", accepted("alice"))
	if out, _ := curl("alice"); !strings.Contains(out, "hello spiffe://demo.local/alice (CN=alice)") {
		t.Errorf("the demo answers %q", out)
	}
	status, report := adminGet(t, admin, "/trustline/topology?format=table")
	if status != 200 || !strings.Contains(report, "live_trust") {
		t.Errorf("topology report (HTTP %d):\n%s", status, report)
	}
	eventually(t, 2*time.Second, "bob (team B) refused", refused("bob"))
	data, err := os.ReadFile(filepath.Join(dir, "team-b-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "trusted-cas", "team-b-ca.crt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "bob accepted once team B's CA is copied in", accepted("bob"))
	mustRemove(t, filepath.Join(dir, "trusted-cas", "team-a-ca.crt"))
	eventually(t, 2*time.Second, "alice refused once team A's CA is removed", refused("alice"))
}

func adminGet(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
