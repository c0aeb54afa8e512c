package material

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ExpandPaths turns files, directories and glob patterns into a sorted list
// of files. A directory contributes its *.pem, *.crt and *.cer files (as in
// /etc/ssl/certs), following symlinks and skipping Kubernetes' hidden
// `..data` entries. A pattern that matches nothing is an error, so a typo
// never becomes an empty trust pool.
func ExpandPaths(patterns []string) ([]string, error) {
	seen := map[string]bool{}
	var files []string
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	for _, pat := range patterns {
		if strings.ContainsAny(pat, "*?[") {
			matches, err := filepath.Glob(pat)
			if err != nil {
				return nil, fmt.Errorf("pattern %q: %w", pat, err)
			}
			if len(matches) == 0 {
				return nil, fmt.Errorf("pattern %q matches no file", pat)
			}
			for _, m := range matches {
				if st, err := os.Stat(m); err == nil && !st.IsDir() {
					add(m)
				}
			}
			continue
		}
		st, err := os.Stat(pat)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			add(pat)
			continue
		}
		entries, err := os.ReadDir(pat)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, "..") || !slices.Contains([]string{".pem", ".crt", ".cer"}, strings.ToLower(filepath.Ext(name))) {
				continue
			}
			p := filepath.Join(pat, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				add(p)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("directory %q holds no .pem, .crt or .cer file", pat)
		}
	}
	slices.Sort(files)
	return files, nil
}

// ReadFiles reads files and returns their contents and a digest of all of
// them (names included), for change detection.
func ReadFiles(files []string) ([][]byte, [32]byte, error) {
	h := sha256.New()
	out := make([][]byte, len(files))
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, [32]byte{}, err
		}
		out[i] = data
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}
	return out, [32]byte(h.Sum(nil)), nil
}
