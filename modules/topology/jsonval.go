package topology

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// The analysis reads the config as generic JSON (what encoding/json makes
// of it: map[string]any, []any, string, float64, bool, nil), through these
// accessors, which return the zero value for anything of the wrong type.
// So no config, however odd, can make the analysis panic.

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func arr(v any) []any {
	a, _ := v.([]any)
	return a
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func boolean(v any) bool {
	b, _ := v.(bool)
	return b
}

func num(v any) (int, bool) {
	f, ok := v.(float64)
	if !ok || f != f || f > 1<<31 || f < -(1<<31) {
		return 0, false
	}
	return int(f), true
}

// strs returns the strings of a JSON array (skipping non-strings), or a
// one-element slice for a string.
func strs(v any) []string {
	if s, ok := v.(string); ok {
		return []string{s}
	}
	var out []string
	for _, e := range arr(v) {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// appendNew appends to list the items it does not hold yet.
func appendNew[T comparable](list []T, items ...T) []T {
	for _, it := range items {
		if !slices.Contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// keys returns the keys of m, sorted (the report is deterministic).
func keys(m map[string]any) []string {
	out := slices.AppendSeq(make([]string, 0, len(m)), maps.Keys(m))
	slices.Sort(out)
	return out
}

// field appends a key to a config path.
func field(path, key string) string { return path + "." + key }

// index appends an array index to a config path.
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// short quotes a value for a message, cutting what is very long.
func short(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}
