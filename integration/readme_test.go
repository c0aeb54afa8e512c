package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/trustline/trustline/integration/bench"
)

// readmeBlock returns the fenced code block that follows the marker
// comment `<!-- readme_test: name -->` in README.md.
func readmeBlock(t *testing.T, readme, name string) string {
	t.Helper()
	marker := "<!-- readme_test: " + name + " -->"
	_, after, ok := strings.Cut(readme, marker)
	if !ok {
		t.Fatalf("README.md has no %s marker", marker)
	}
	blocks := fencedBlocks(after)
	if len(blocks) == 0 {
		t.Fatalf("README.md: no code block after %s", marker)
	}
	return blocks[0].body
}

type fencedBlock struct {
	lang, body string
	line       int
}

// fencedBlocks returns the ``` code blocks of a Markdown text, in order.
func fencedBlocks(text string) []fencedBlock {
	var out []fencedBlock
	var cur *fencedBlock
	var body []string
	for n, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &fencedBlock{lang: strings.TrimPrefix(trimmed, "```"), line: n + 1}
			body = nil
		case cur != nil && trimmed == "```":
			cur.body = strings.Join(body, "\n") + "\n"
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			body = append(body, line)
		}
	}
	return out
}

func readReadme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(bench.RepoPath("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestReadme: the README's quick start, as a new user follows it from a
// fresh clone. Its test-certificate recipe runs with the real openssl and
// keytool in an empty directory; its Caddyfile runs in the real binary
// (with the port and the admin address moved to free ones, and nothing
// else changed), started as its run line says; its curl lines run as
// written: the client with its certificate gets the answer the comment
// shows, the one without is refused.
func TestReadme(t *testing.T) {
	bench.Need(t, "openssl")
	bench.Need(t, "keytool")
	bench.Need(t, "curl")
	readme := readReadme(t)
	recipe := readmeBlock(t, readme, "recipe")
	caddyfile := readmeBlock(t, readme, "caddyfile")
	try := readmeBlock(t, readme, "try")

	// the run line: environment assignments, then ./caddy run --config Caddyfile
	runLine := regexp.MustCompile(`(?m)^((?:[A-Z_]+=\S+ )*)\./caddy run --config Caddyfile$`).FindStringSubmatch(try)
	if runLine == nil {
		t.Fatalf("the README's try block has no `./caddy run --config Caddyfile` line:\n%s", try)
	}
	c := bench.New(t, strings.Fields(runLine[1])...)

	sh := exec.Command("bash", "-euo", "pipefail", "-c", recipe)
	sh.Dir = c.Dir
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the README's certificate recipe failed: %v\n%s\n---- recipe ----\n%s", err, out, recipe)
	}
	for _, f := range []string{"ca.crt", "server.crt", "server.key", "client.crt", "client.key", "client.p12", "trust.p12", "trust.jks"} {
		if _, err := os.Stat(filepath.Join(c.Dir, "certs", f)); err != nil {
			t.Errorf("the recipe made no certs/%s: %v", f, err)
		}
	}

	const readmeSite = "localhost:8443"
	if !strings.Contains(caddyfile, readmeSite) || !strings.HasPrefix(caddyfile, "{\n") {
		t.Fatalf("the README's Caddyfile should open with global options and serve %s:\n%s", readmeSite, caddyfile)
	}
	site := "localhost:" + bench.Port(bench.FreeAddr(t))
	local := "{\n\tadmin {$TL_ADMIN}\n" + strings.ReplaceAll(strings.TrimPrefix(caddyfile, "{\n"), readmeSite, site)
	c.Start(t, local)

	var curls int
	for _, line := range strings.Split(try, "\n") {
		if !strings.HasPrefix(line, "curl ") {
			continue
		}
		curls++
		cmdline, comment, _ := strings.Cut(line, "#")
		comment = strings.TrimSpace(comment)
		cmd := exec.Command("bash", "-c", strings.ReplaceAll(cmdline, readmeSite, site)+" --silent --show-error --max-time 20")
		cmd.Dir = c.Dir
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if strings.HasPrefix(comment, "refused") {
			if err == nil {
				t.Errorf("%s\n  accepted (%q), the README says %q", line, stdout.String(), comment)
			}
			continue
		}
		if err != nil || !strings.Contains(stdout.String(), comment) {
			t.Errorf("%s\n  answered %q (%v, %s), the README says %q", line, stdout.String(), err, stderr.String(), comment)
		}
	}
	if curls < 2 {
		t.Errorf("the README's try block has %d curl lines, want one accepted and one refused:\n%s", curls, try)
	}
	// what a user trying it sees in the log for the refused one: nothing at
	// INFO (no certificate at all is Caddy's own DEBUG line), and the
	// accepted one logged nothing as an error
	if strings.Contains(c.Log(), `"level":"error"`) {
		t.Errorf("errors in the log of the quick start:\n%s", c.Log())
	}
}

var envPlaceholder = regexp.MustCompile(`\{\$([A-Z_][A-Z0-9_]*)\}`)

// TestReadmeCaddyfilesAdapt: every ```caddyfile block of README.md adapts
// with the real binary, so none of them shows a directive, an option or a
// syntax the suite does not have.
func TestReadmeCaddyfilesAdapt(t *testing.T) {
	readme := readReadme(t)
	c := bench.New(t)
	base := c.Env
	var n int
	for _, b := range fencedBlocks(readme) {
		if b.lang != "caddyfile" {
			continue
		}
		n++
		// an environment variable a block reads ({$OPS_HASH}) is set, as
		// the README says to
		c.Env = base
		for _, m := range envPlaceholder.FindAllStringSubmatch(b.body, -1) {
			c.Env = append(c.Env, m[1]+"=$2a$14$readme-test-value")
		}
		path := filepath.Join(c.Dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(b.body), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := c.Command(t, "adapt", "--config", path, "--adapter", "caddyfile"); err != nil {
			t.Errorf("README.md line %d: the Caddyfile does not adapt: %v\n%s\n---- block ----\n%s", b.line, err, out, b.body)
		}
	}
	if n < 10 {
		t.Errorf("only %d caddyfile blocks found in README.md: the block scanner is broken", n)
	}
}
