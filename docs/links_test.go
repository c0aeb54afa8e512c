package docs

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository's root, the parent of this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: %v", root, err)
	}
	return root
}

// markdownFiles lists the repository's .md files (relative, slash-separated),
// skipping hidden directories (.git, .ci, ...) and testdata.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(d.Name(), ".md") {
			rel, _ := filepath.Rel(root, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no Markdown files found")
	}
	return files
}

// A link: [text](target) or [text](target "title"), and reference
// definitions ([name]: target). Images (![alt](src)) are links too.
var (
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	refLink    = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
)

type link struct {
	line   int
	target string
}

// links returns the link targets of a Markdown document, outside fenced
// code blocks and code spans.
func links(text string) []link {
	var out []link
	fence := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " \t")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			out = append(out, link{n, m[1]})
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			out = append(out, link{n, m[1]})
		}
	}
	return out
}

// isExternal reports whether a link target leaves the repository by
// design: a URL with a scheme (https:, mailto:, ...).
func isExternal(target string) bool {
	i := strings.Index(target, ":")
	if i <= 0 {
		return false
	}
	for _, r := range target[:i] {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '+' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// anchors returns the heading anchors GitHub generates for a Markdown
// document: the heading text lowercased, punctuation dropped, spaces turned
// into hyphens, and -1, -2, ... appended to repeats.
func anchors(text string) map[string]bool {
	set := map[string]bool{}
	seen := map[string]int{}
	fence := ""
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimLeft(line, " \t")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		slug := slugify(title)
		if n := seen[slug]; n > 0 {
			set[slug+"-"+strconv.Itoa(n)] = true
		} else {
			set[slug] = true
		}
		seen[slug]++
	}
	return set
}

func slugify(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// brokenLinks returns, for the Markdown files files (relative to root), one
// line per relative link that names no file or directory under root (or,
// for a #fragment into a Markdown file, no heading of it), and how many
// relative links it checked.
func brokenLinks(root string, files []string) (broken []string, checked int, err error) {
	cache := map[string]map[string]bool{}
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			return nil, 0, err
		}
		for _, l := range links(string(data)) {
			if isExternal(l.target) {
				continue
			}
			checked++
			path, frag, _ := strings.Cut(l.target, "#")
			if i := strings.IndexByte(path, '?'); i >= 0 {
				path = path[:i]
			}
			file := filepath.Join(root, filepath.FromSlash(rel))
			if path != "" {
				if strings.HasPrefix(path, "/") {
					file = filepath.Join(root, filepath.FromSlash(path))
				} else {
					file = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				}
			}
			inRepo, err := filepath.Rel(root, file)
			if err != nil || inRepo == ".." || strings.HasPrefix(inRepo, ".."+string(filepath.Separator)) {
				broken = append(broken, fmt.Sprintf("%s:%d: link %q leaves the repository", rel, l.line, l.target))
				continue
			}
			st, err := os.Stat(file)
			if err != nil {
				broken = append(broken, fmt.Sprintf("%s:%d: link %q: no such file in the repository (%s)", rel, l.line, l.target, filepath.ToSlash(inRepo)))
				continue
			}
			if frag == "" || st.IsDir() || !strings.HasSuffix(file, ".md") {
				continue
			}
			set, ok := cache[file]
			if !ok {
				text, err := os.ReadFile(file)
				if err != nil {
					return nil, 0, err
				}
				set = anchors(string(text))
				cache[file] = set
			}
			if !set[strings.ToLower(frag)] {
				broken = append(broken, fmt.Sprintf("%s:%d: link %q: %s has no heading with the anchor #%s", rel, l.line, l.target, filepath.ToSlash(inRepo), frag))
			}
		}
	}
	return broken, checked, nil
}

// TestRelativeLinksResolve: every relative link in every Markdown file of
// the repository names a file or directory of the repository (and, for a
// link into a Markdown file with a #fragment, one of its headings).
func TestRelativeLinksResolve(t *testing.T) {
	root := repoRoot(t)
	broken, checked, err := brokenLinks(root, markdownFiles(t, root))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range broken {
		t.Error(b)
	}
	if checked < 20 {
		t.Fatalf("only %d relative links found: the link scanner is broken", checked)
	}
}

// TestBrokenLinksFound: the checker finds each kind of broken link in a
// small tree, and none of the good ones.
func TestBrokenLinksFound(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/a.md", "# A\n\n## Where `it` lives, really\n\n## Speed\n\n## Speed\n")
	write("scripts/x.sh", "")
	write("README.md", strings.Join([]string{
		"# Top",
		"[good](docs/a.md) [dir](scripts/) [anchor](docs/a.md#where-it-lives-really) [dup](docs/a.md#speed-1)",
		"[url](https://example.com/x.md) [mail](mailto:a@b) [self](#top)",
		"`[in code](missing-in-code.md)`",
		"```",
		"[fenced](missing-fenced.md)",
		"```",
		"[missing](docs/b.md) [outside](../elsewhere/DESIGN.md) [bad anchor](docs/a.md#nope)",
		"[ref]: scripts/y.sh",
		"![img](docs/pic.png \"title\")",
	}, "\n"))
	broken, checked, err := brokenLinks(root, []string{"README.md", "docs/a.md"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(broken, "\n")
	for _, want := range []string{`"docs/b.md": no such file`, `"../elsewhere/DESIGN.md" leaves the repository`,
		`"docs/a.md#nope"`, `"scripts/y.sh": no such file`, `"docs/pic.png": no such file`} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in:\n%s", want, got)
		}
	}
	if len(broken) != 5 || checked != 10 {
		t.Errorf("%d broken of %d checked, want 5 of 10:\n%s", len(broken), checked, got)
	}
}

// outside matches what a reader of a clone cannot follow: paths into a
// directory beside the repository, and references to issue numbers of a
// tracker the clone does not carry. Line breaks inside a reference count
// (Markdown wraps lines).
var outside = regexp.MustCompile(`(?i)\.\./shared\b|\bshared/[A-Z]+\.md|\bissue\s+#?[0-9]+|\bissues\s+#[0-9]+|\(#[0-9]+\)`)

// TestNoReferencesOutsideTheRepository: the documentation stands on its
// own; the project's goals are stated as such, not as issue numbers.
func TestNoReferencesOutsideTheRepository(t *testing.T) {
	root := repoRoot(t)
	for _, rel := range markdownFiles(t, root) {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for _, loc := range outside.FindAllStringIndex(text, -1) {
			line := 1 + strings.Count(text[:loc[0]], "\n")
			t.Errorf("%s:%d: %q points outside the repository", rel, line, strings.ReplaceAll(text[loc[0]:loc[1]], "\n", " "))
		}
	}
}

// TestFuzzTargetsListed: DEVELOPING.md lists every fuzz target of the
// repository, with its package.
func TestFuzzTargetsListed(t *testing.T) {
	root := repoRoot(t)
	dev, err := os.ReadFile(filepath.Join(root, "DEVELOPING.md"))
	if err != nil {
		t.Fatal(err)
	}
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz[A-Za-z0-9_]*)\(`)
	var found []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(d.Name(), "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dir, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range fuzzFunc.FindAllStringSubmatch(string(src), -1) {
			found = append(found, m[1])
			row := "| `" + m[1] + "` | `./" + filepath.ToSlash(dir) + "` |"
			if !strings.Contains(string(dev), row) {
				t.Errorf("DEVELOPING.md lists no row %q (fuzz target in %s)", row, filepath.ToSlash(dir))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(found, "FuzzScanClientHello") {
		t.Fatalf("fuzz target scan found %v, not FuzzScanClientHello: the scanner is broken", found)
	}
}
