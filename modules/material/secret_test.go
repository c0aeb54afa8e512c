package material

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

// TestResolveSecret: placeholders resolve; literal braces stay literal.
func TestResolveSecret(t *testing.T) {
	t.Setenv("TL_SECRET_TEST", "from-env")
	dir := t.TempDir()
	file := testpki.WriteFile(t, dir, "pass", []byte("from-file\n"))
	for value, want := range map[string]string{
		"plain":                   "plain",
		"{env.TL_SECRET_TEST}":    "from-env",
		"{file." + file + "}":     "from-file",
		"pre{env.TL_SECRET_TEST}": "prefrom-env",
		`a\{b\}c`:                 "a{b}c",
		"ab{cd":                   "ab{cd",
		"ab}cd":                   "ab}cd",
	} {
		got, err := ResolveSecret("password", value)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", value, got, err, want)
		}
	}
}

// TestResolveSecretNeverQuotesPassword: a literal
// password with braces fails as an unknown or empty placeholder; the error
// (which Caddy returns to the admin API and logs) must not carry any part
// of it. Only a value that is a single {env.*}/{file.*} reference (where
// the password is, not the password) is named.
func TestResolveSecretNeverQuotesPassword(t *testing.T) {
	for _, tc := range []struct {
		value   string
		secrets []string // fragments that must not appear
		want    error
	}{
		{"Pa55{w0rdQ}X!", []string{"w0rdQ", "Pa55", "X!"}, errSecretUnknown},
		{"{Zq9#Lm}", []string{"Zq9#Lm"}, errSecretUnknown},
		{"}{Kp7Qr}{", []string{"Kp7Qr"}, errSecretUnknown},
		{"Hx{env.TL_NOPE_SECRET_PART}Yz", []string{"TL_NOPE_SECRET_PART", "Hx", "Yz"}, errSecretEmpty},
		{"Hx{file./nonexistent/TLsecretpart}Yz", []string{"TLsecretpart", "nonexistent", "Hx", "Yz"}, errSecretFile},
		{strings.Repeat("{Qw", 200) + "}", []string{"Qw"}, nil}, // the last brace closes one
	} {
		_, err := ResolveSecret("keystore jks /etc/ks.jks: password", tc.value)
		if err == nil {
			t.Errorf("%.40q: no error", tc.value)
			continue
		}
		for _, s := range tc.secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%.40q: the error quotes %q: %v", tc.value, s, err)
			}
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%.40q: got %v, want %v", tc.value, err, tc.want)
		}
		if !strings.HasPrefix(err.Error(), "keystore jks /etc/ks.jks: password: ") {
			t.Errorf("%.40q: the error does not name the setting: %v", tc.value, err)
		}
	}

	// a single reference is named: it says where the password is
	missing := filepath.Join(t.TempDir(), "missing")
	for value, want := range map[string]string{
		"{env.TL_NOPE_UNSET}":    "{env.TL_NOPE_UNSET} is empty or unset",
		"{file." + missing + "}": missing,
	} {
		_, err := ResolveSecret("password", value)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", value, err, want)
		}
	}
}

// FuzzResolveSecret: whatever the value, no panic, and an error for a
// value that is not a single reference is one of the fixed messages.
func FuzzResolveSecret(f *testing.F) {
	for _, s := range []string{"plain", "{env.HOME}", "a{b}c", `a\{b\}c`, "{", "}", "{}", "{{x}}", "x{env.}y",
		"{file./nonexistent}", "{file.}", "{time.now}{system.os}", strings.Repeat("{", 120)} {
		f.Add(s)
	}
	known := []error{errSecretUnknown, errSecretEmpty, errSecretFile, errSecretSyntax}
	f.Fuzz(func(t *testing.T, value string) {
		_, err := ResolveSecret("S", value)
		if err == nil || secretRef.MatchString(value) {
			return
		}
		for _, k := range known {
			if err.Error() == "S: "+k.Error() {
				return
			}
		}
		t.Fatalf("%q: an error that may quote the value: %v", value, err)
	})
}
