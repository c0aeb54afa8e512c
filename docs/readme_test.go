package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goSources concatenates the non-test Go files of the packages (patterns
// as `go list` takes them, from the repository's root).
func goSources(t *testing.T, root string, packages ...string) string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-f", `{{range .GoFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}`}, packages...)...)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", packages, err)
	}
	var b strings.Builder
	for _, file := range strings.Fields(string(out)) {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(src)
		b.WriteByte('\n')
	}
	return b.String()
}

// troubleshootingLogColumn returns, per row of the README's troubleshooting
// table, the cell that says what the log says.
func troubleshootingLogColumn(t *testing.T, readme string) []string {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Troubleshooting: why was it refused?\n")
	if !ok {
		t.Fatal("README.md has no `## Troubleshooting: why was it refused?` section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var cells []string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		cols := strings.Split(line, " | ")
		if len(cols) != 3 || strings.HasPrefix(line, "| the client sees") {
			continue
		}
		cells = append(cells, cols[1])
	}
	return cells
}

var (
	codeSpanText = regexp.MustCompile("`([^`]+)`")
	loggerNote   = regexp.MustCompile("\\(logger `[^`]+`\\)")
	quotedValue  = regexp.MustCompile(`"[^"]*"`)
	fragmentSep  = regexp.MustCompile(`\.\.\.|: `)
)

// TestTroubleshootingLogLinesExist: every log message, field and error the
// README's troubleshooting table quotes is written by the suite's code or
// by the Go packages that produce it (crypto/tls, crypto/x509, net/http).
// A quote is checked in its pieces: "..." stands for a value, and the
// pieces between `: ` are often joined from several strings
// (`refused TLS handshake: ` + the reason). Logger names are built by
// Caddy from module IDs and are not checked here.
func TestTroubleshootingLogLinesExist(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	corpus := goSources(t, root, "./modules/...", "./caddyfile", "crypto/tls", "crypto/x509", "net/http")
	if !strings.Contains(corpus, "reload failed; keeping the last good version") || !strings.Contains(corpus, "certificate signed by unknown authority") {
		t.Fatal("the sources read lack known messages: the corpus is broken")
	}
	cells := troubleshootingLogColumn(t, string(readme))
	if len(cells) < 10 {
		t.Fatalf("the troubleshooting table has %d rows, want at least 10", len(cells))
	}
	var quotes int
	for _, cell := range cells {
		cell = loggerNote.ReplaceAllString(cell, "")
		for _, m := range codeSpanText.FindAllStringSubmatch(cell, -1) {
			quotes++
			for _, piece := range fragmentSep.Split(quotedValue.ReplaceAllString(m[1], "..."), -1) {
				piece = strings.Trim(piece, " :")
				if len(piece) < 3 {
					continue
				}
				if !strings.Contains(corpus, piece) {
					t.Errorf("README troubleshooting: %q (in `%s`) is written nowhere in the suite's code or the Go packages it quotes", piece, m[1])
				}
			}
		}
	}
	if quotes < 20 {
		t.Errorf("only %d quotes in the troubleshooting table's log column: the table scanner is broken", quotes)
	}
}
