package material

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// ResolveSecret expands Caddy's global placeholders in a password setting:
// `{env.STORE_PASSWORD}` or `{file./run/secrets/store-pass}` (without the
// file's trailing newline). An unknown or empty placeholder is an error, so
// a typo never becomes an empty password. An error quotes the value only
// when it is a single `{env.*}`/`{file.*}` reference; otherwise the braces
// may be part of a literal password (written `\{` or `\}`).
func ResolveSecret(setting, value string) (string, error) {
	if !strings.ContainsAny(value, "{}") {
		return value, nil
	}
	ref := secretRef.MatchString(value)
	var failure error
	fail := func(err error) (any, error) {
		failure = err
		return nil, err
	}
	out, err := caddy.NewReplacer().WithoutFile().ReplaceFunc(value, func(key string, val any) (any, error) {
		if name, ok := strings.CutPrefix(key, "file."); ok {
			data, err := readSecretFile(name)
			if err != nil {
				if ref {
					return fail(fmt.Errorf("%s: %s: %w", setting, value, err))
				}
				return fail(fmt.Errorf("%s: %w", setting, errSecretFile))
			}
			val = data
		} else if val == nil {
			return fail(fmt.Errorf("%s: %w", setting, errSecretUnknown))
		}
		if caddy.ToString(val) == "" {
			if ref {
				return fail(fmt.Errorf("%s: %s is empty or unset", setting, value))
			}
			return fail(fmt.Errorf("%s: %w", setting, errSecretEmpty))
		}
		return val, nil
	})
	if failure != nil {
		return "", failure
	}
	if err != nil {
		// the replacer's own errors are not shown: they may quote the value
		return "", fmt.Errorf("%s: %w", setting, errSecretSyntax)
	}
	return strings.TrimRight(out, "\r\n"), nil
}

// secretRef is a value that is one reference and nothing else.
var secretRef = regexp.MustCompile(`^\{(env|file)\.[^{}\\]+\}$`)

// The errors for a value that is not a single reference: none quotes it.
var (
	errSecretUnknown = errors.New("holds an unknown placeholder (not shown, as it may be part of a literal password): use {env.NAME} or {file./path}, or write a literal brace as \\{ or \\}")
	errSecretEmpty   = errors.New("holds a placeholder that is empty or unset (not shown, as it may be part of a literal password)")
	errSecretFile    = errors.New("holds a {file.*} placeholder whose file cannot be read (not shown, as it may be part of a literal password)")
	errSecretSyntax  = errors.New("holds too many unclosed braces to resolve (not shown, as they may be part of a literal password)")
)

// maxSecretFile bounds a password file, as Caddy's {file.*} does.
const maxSecretFile = 1 << 20

// readSecretFile reads a {file.*} placeholder's file, without the trailing
// newline, as Caddy's own {file.*} does (but without logging its name).
func readSecretFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r"), nil
}
