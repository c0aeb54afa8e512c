package caddyfile_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/trustline/trustline"
	"github.com/trustline/trustline/internal/testcaddy"
)

// TestGolden adapts every testdata/**/*.caddyfiletest file: the Caddyfile
// above a line of ten dashes, and below it either the expected JSON or a line
// "error: <text>" that the error must contain. As `caddy adapt --validate`
// does, a Caddyfile that adapts is then provisioned, for the mistakes only
// the whole config shows (a client_auth that live_trust cannot work in, a
// passthrough name that another site serves); such a file may read the
// files in testdata/fixtures (paths relative to this directory).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*/*.caddyfiletest")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files found under testdata/")
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, file := range files {
		t.Run(strings.TrimSuffix(file[len("testdata/"):], ".caddyfiletest"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(raw), "\n----------\n")
			if !ok {
				t.Fatalf("%s: no ---------- separator line", file)
			}
			expected = strings.TrimSpace(expected)
			out, _, err := adapter.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
			if want, isErr := strings.CutPrefix(expected, "error:"); isErr {
				want = strings.TrimSpace(want)
				if err == nil {
					_, err = testcaddy.Validate(t, out)
				}
				if err == nil {
					t.Fatalf("expected an adapt or validate error containing %q, got JSON that validates:\n%s", want, out)
				}
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("adapt error %q does not contain %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var got, exp bytes.Buffer
			if err := json.Indent(&got, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			if err := json.Indent(&exp, []byte(expected), "", "\t"); err != nil {
				t.Fatalf("expected JSON in %s is invalid: %v", file, err)
			}
			if got.String() != exp.String() {
				if os.Getenv("UPDATE_GOLDEN") == "1" {
					if err := os.WriteFile(file, []byte(input+"\n----------\n"+got.String()+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				t.Fatalf("adapted JSON differs (UPDATE_GOLDEN=1 rewrites)\n--- got\n%s\n--- want\n%s", got.String(), exp.String())
			}
		})
	}
}
