package trustline

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsEveryRegisteringPackage: the root package imports, by name,
// every package of the suite that registers a Caddy module or a Caddyfile
// directive, as docs/architecture.md and DEVELOPING.md say. A package
// reached only through another package's imports (modules/cluster was
// registered only because caddyfile/ imported it) would silently drop out
// of the build when that import moved.
func TestImportsEveryRegisteringPackage(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "trustline.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	imported := map[string]bool{}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		imported[p] = true
	}
	const module = "github.com/trustline/trustline"
	registering := map[string]bool{}
	for _, root := range []string{"caddyfile", "modules"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if strings.Contains(string(src), "caddy.RegisterModule(") || strings.Contains(string(src), "httpcaddyfile.Register") {
				registering[module+"/"+filepath.ToSlash(filepath.Dir(path))] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !registering[module+"/modules/truststore"] {
		t.Fatalf("found %v: the scan for registering packages is broken", registering)
	}
	for p := range registering {
		if !imported[p] {
			t.Errorf("trustline.go does not import %s, which registers modules or directives", p)
		}
	}
}
