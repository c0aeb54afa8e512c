package topology

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// FuzzLocateCaddyfile: no Caddyfile the adapter takes makes the search for
// the findings' lines panic, and every line found is one of the file's.
// Files are read as the configs name them (only regular files, bounded).
//
//	go test -run XXX -fuzz FuzzLocateCaddyfile -fuzztime 60s -fuzzminimizetime 2s ./modules/topology
func FuzzLocateCaddyfile(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/golden/*.caddyfile")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a.test {\n\treverse_proxy https://b:1 {\n\t\ttransport http {\n\t\t\ttls_insecure_skip_verify\n\t\t}\n\t}\n}\n"))
	f.Add([]byte("{\n\tlayer4 {\n\t\t:1 {\n\t\t\troute {\n\t\t\t\ttls\n\t\t\t\tproxy 10.0.0.1:2\n\t\t\t}\n\t\t}\n\t}\n}\n"))
	f.Add([]byte(":80 {\n\thandle {\n\t\treverse_proxy {\n\t\t}\n\t}\n}\n"))
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		f.Skip("no caddyfile adapter")
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cfg, _, err := adapter.Adapt(body, map[string]any{"filename": "Caddyfile"})
		if err != nil {
			return
		}
		rep, err := Analyze(cfg, Options{NoFiles: true})
		if err != nil {
			return
		}
		if err := rep.LocateCaddyfile(cfg, "Caddyfile", body); err != nil {
			return
		}
		lines := bytes.Count(body, []byte("\n")) + 1
		for _, fd := range rep.Findings {
			if fd.Location == "" {
				continue
			}
			file, line, _ := strings.Cut(fd.Location, ":")
			if n, err := strconv.Atoi(line); file != "Caddyfile" || err != nil || n < 1 || n > lines {
				t.Fatalf("finding %s located at %q, outside the file (%d lines)", fd.Kind, fd.Location, lines)
			}
		}
		if err := rep.WriteTable(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
}
