package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/integration/bench"
)

// TestDemo runs scripts/demo.sh (the README's first command) as a user
// would, with no DEMO_DIR, and follows the instructions it prints, with
// curl: the directory it names, the accepted and refused clients, a CA
// copied in and one removed. The checkout is left as it was (the script
// writes its CAs, certificates and Caddy's state to a temporary directory,
// removed when it stops), and the options it documents are the ones it
// reads.
func TestDemo(t *testing.T) {
	bench.Need(t, "openssl")
	before := checkoutState(t)
	admin, site := bench.FreeAddr(t), bench.FreeAddr(t)
	p := bench.StartProcessEnv(t, []string{
		"TRUSTLINE_CADDY=" + bench.Binary(t),
		"DEMO_DIR=", // as on a fresh machine
		"DEMO_PORT=" + bench.Port(site),
		"TL_ADMIN=" + admin,
	}, bench.RepoPath("scripts", "demo.sh"))
	p.WaitLog(t, "Ctrl-C stops Caddy", 30*time.Second)
	bench.WaitPort(t, site, 30*time.Second)

	m := regexp.MustCompile(`(?m)^\s+cd (\S+)$`).FindStringSubmatch(p.Log())
	if m == nil {
		t.Fatalf("the demo prints no `cd <dir>` line:\n%s", p.Log())
	}
	dir := m[1]
	if rel, err := filepath.Rel(bench.RepoPath(), dir); err == nil && !strings.HasPrefix(rel, "..") {
		t.Errorf("the demo's files are in %s, inside the checkout", dir)
	}
	for _, want := range []string{"https://localhost:" + bench.Port(site), "admin API on " + admin} {
		if !strings.Contains(p.Log(), want) {
			t.Errorf("the demo's instructions do not say %q", want)
		}
	}

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

	p.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the demo's directory %s is still there after it stopped (stat: %v)", dir, err)
	}
	if after := checkoutState(t); !slices.Equal(before, after) {
		t.Errorf("the demo changed the checkout:\nbefore: %q\nafter:  %q", before, after)
	}
}

// checkoutState is what `git status` says of the checkout, ignored files
// included (the demo used to write demo-run/, which .gitignore hid); where
// the checkout is no git work tree, whether demo-run/ exists.
func checkoutState(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("git", "status", "--porcelain", "--ignored", "--untracked-files=all")
	cmd.Dir = bench.RepoPath()
	out, err := cmd.Output()
	if err != nil {
		_, statErr := os.Stat(bench.RepoPath("demo-run"))
		t.Logf("no git status (%v): checking only that demo-run/ is absent", err)
		return []string{fmt.Sprintf("demo-run/ exists: %v", statErr == nil)}
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
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
