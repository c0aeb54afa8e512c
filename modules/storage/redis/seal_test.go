package redis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const secretPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB0secretsecretsecret\n-----END EC PRIVATE KEY-----\n"

func TestEncryptionRoundTripAndAtRest(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	s := newTestStore(t, addr, storeOpts{sealer: testSealer(t, "k1")})
	if err := s.Store(ctx, "certificates/ca/ca.key", []byte(secretPEM)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "certificates/ca/ca.key")
	if err != nil || string(got) != secretPEM {
		t.Fatalf("Load = %q, %v", got, err)
	}
	raw, err := rawClient(t, addr).HGet(ctx, "{caddy}:v:certificates/ca/ca.key", "v").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("PRIVATE KEY")) || bytes.Contains(raw, []byte("secretsecret")) {
		t.Fatal("the value is readable in Redis")
	}
	h, err := parseSealed(raw)
	if err != nil || h.keyID != "k1" {
		t.Fatalf("stored value header: %+v, %v", h, err)
	}
	// the size reported is the value's, not the ciphertext's
	if info, err := s.Stat(ctx, "certificates/ca/ca.key"); err != nil || info.Size != int64(len(secretPEM)) {
		t.Errorf("Stat = %+v, %v", info, err)
	}
	// two writes of the same value differ (fresh nonce)
	if err := s.Store(ctx, "certificates/ca/ca.key", []byte(secretPEM)); err != nil {
		t.Fatal(err)
	}
	raw2, _ := rawClient(t, addr).HGet(ctx, "{caddy}:v:certificates/ca/ca.key", "v").Bytes()
	if bytes.Equal(raw, raw2) {
		t.Error("sealing the same value twice gave the same bytes")
	}
}

func TestEncryptionKeyRotation(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	k1 := testKey(t, "2026-05")
	k2 := testKey(t, "2026-11")
	old, _ := newSealer([]*sealKey{k1}, false)
	s1 := newTestStore(t, addr, storeOpts{sealer: old})
	if err := s1.Store(ctx, "old", []byte("written with k1")); err != nil {
		t.Fatal(err)
	}
	rotated, _ := newSealer([]*sealKey{k2, k1}, false)
	s2 := newTestStore(t, addr, storeOpts{sealer: rotated})
	if v, err := s2.Load(ctx, "old"); err != nil || string(v) != "written with k1" {
		t.Fatalf("the old key's value after rotation: %q, %v", v, err)
	}
	if err := s2.Store(ctx, "new", []byte("written with k2")); err != nil {
		t.Fatal(err)
	}
	raw, _ := rawClient(t, addr).HGet(ctx, "{caddy}:v:new", "v").Bytes()
	if h, err := parseSealed(raw); err != nil || h.keyID != "2026-11" {
		t.Fatalf("new value sealed with %q (%v), want 2026-11", h.keyID, err)
	}
	// rewriting an old value re-seals it with the new key
	v, _ := s2.Load(ctx, "old")
	if err := s2.Store(ctx, "old", v); err != nil {
		t.Fatal(err)
	}
	raw, _ = rawClient(t, addr).HGet(ctx, "{caddy}:v:old", "v").Bytes()
	if h, _ := parseSealed(raw); h.keyID != "2026-11" {
		t.Errorf("rewritten value sealed with %q", h.keyID)
	}
	// a node that has only the old key cannot read the new values, and says why
	_, err := s1.Load(ctx, "new")
	if err == nil || !strings.Contains(err.Error(), `key id "2026-11"`) || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("reading a value of an unknown key id: %v", err)
	}
}

func TestEncryptionWrongKey(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	a := newTestStore(t, addr, storeOpts{sealer: testSealer(t, "same-id")})
	if err := a.Store(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// another key under the same id: the AEAD refuses, the error names
	// the value, the id and where the key came from, never the key
	other := testKey(t, "same-id2")
	other.id = "same-id"
	wrong, _ := newSealer([]*sealKey{other}, false)
	b := newTestStore(t, addr, storeOpts{sealer: wrong})
	_, err := b.Load(ctx, "k")
	if err == nil {
		t.Fatal("a value opened with the wrong key")
	}
	for _, want := range []string{`"k"`, `key id "same-id"`, "key_env TL_TEST_KEY_same-id2", "wrong key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), os.Getenv("TL_TEST_KEY_same-id2")) {
		t.Error("the error shows the key")
	}
}

func TestEncryptionTamperedValue(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	s := newTestStore(t, addr, storeOpts{sealer: testSealer(t, "k1")})
	if err := s.Store(ctx, "a/cert", []byte(secretPEM)); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "b/cert", []byte("another value")); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, addr)
	orig, _ := raw.HGet(ctx, "{caddy}:v:a/cert", "v").Bytes()

	flip := append([]byte(nil), orig...)
	flip[len(flip)-20] ^= 0x01
	cases := map[string][]byte{
		"a flipped ciphertext bit": flip,
		"truncated":                orig[:len(orig)-5],
		"header only":              orig[:len(sealMagic)+2+2],
		"other id in the header":   append([]byte(sealMagic+"\x02\x02k2"), orig[len(sealMagic)+4:]...),
		"version 1 header":         append([]byte(sealMagic+"\x01"), orig[len(sealMagic)+1:]...),
	}
	moved, _ := raw.HGet(ctx, "{caddy}:v:b/cert", "v").Bytes()
	cases["another key's value moved here"] = moved
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			if err := raw.HSet(ctx, "{caddy}:v:a/cert", "v", bad).Err(); err != nil {
				t.Fatal(err)
			}
			v, err := s.Load(ctx, "a/cert")
			if err == nil {
				t.Fatalf("a tampered value was served: %q", v)
			}
			if v != nil {
				t.Errorf("bytes returned with the error")
			}
			if !strings.Contains(err.Error(), `"a/cert"`) {
				t.Errorf("error does not name the value: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestEncryptionPlaintextValues(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t)
	plain := newTestStore(t, addr, storeOpts{})
	if err := plain.Store(ctx, "legacy", []byte("written in clear")); err != nil {
		t.Fatal(err)
	}
	k := testKey(t, "k1")
	strict, _ := newSealer([]*sealKey{k}, false)
	s := newTestStore(t, addr, storeOpts{sealer: strict})
	if _, err := s.Load(ctx, "legacy"); err == nil || !strings.Contains(err.Error(), "allow_plaintext_reads") {
		t.Errorf("a plaintext value read with encryption on: %v", err)
	}
	lax, _ := newSealer([]*sealKey{k}, true)
	m := newTestStore(t, addr, storeOpts{sealer: lax})
	if v, err := m.Load(ctx, "legacy"); err != nil || string(v) != "written in clear" {
		t.Errorf("with allow_plaintext_reads: %q, %v", v, err)
	}
	// a sealed value read by a node without encryption: an error, not ciphertext
	if err := s.Store(ctx, "sealed", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if v, err := plain.Load(ctx, "sealed"); err == nil || !strings.Contains(err.Error(), "no encryption block") {
		t.Errorf("a sealed value read without encryption: %q, %v", v, err)
	}
}

func TestParseKeyMaterial(t *testing.T) {
	raw := make([]byte, 32)
	rand.Read(raw)
	good := map[string][]byte{
		"raw":            raw,
		"hex":            []byte(hex.EncodeToString(raw) + "\n"),
		"base64":         []byte(base64.StdEncoding.EncodeToString(raw) + "\n"),
		"base64 raw url": []byte(base64.RawURLEncoding.EncodeToString(raw)),
	}
	for name, in := range good {
		got, err := parseKeyMaterial(in)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("%s: %x, %v", name, got, err)
		}
	}
	bad := map[string]string{
		"short base64": base64.StdEncoding.EncodeToString(raw[:16]),
		"text":         "correct horse battery staple",
		"empty":        "",
		"hex 31 bytes": hex.EncodeToString(raw[:31]),
	}
	for name, in := range bad {
		if _, err := parseKeyMaterial([]byte(in)); err == nil || !strings.Contains(err.Error(), "openssl rand -base64 32") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestLoadSealKeyErrors(t *testing.T) {
	dir := t.TempDir()
	shortFile := filepath.Join(dir, "short.key")
	os.WriteFile(shortFile, []byte("c2hvcnQ=\n"), 0o600)
	goodFile := filepath.Join(dir, "good.key")
	os.WriteFile(goodFile, []byte(strings.Repeat("ab", 32)), 0o600)
	t.Setenv("TL_EMPTY_KEY", "")
	cases := []struct {
		name, id, file, env, want string
	}{
		{"missing file", "", filepath.Join(dir, "nope"), "", "key_file " + filepath.Join(dir, "nope")},
		{"short key", "", shortFile, "", "want 32"},
		{"unset env", "", "", "TL_NO_SUCH_VAR", "key_env TL_NO_SUCH_VAR: the environment variable is not set"},
		{"empty env", "", "", "TL_EMPTY_KEY", "not set"},
		{"both", "", goodFile, "X", "not both"},
		{"neither", "", "", "", "required"},
		{"bad id", "a b", goodFile, "", `key id "a b"`},
	}
	for _, c := range cases {
		_, err := loadSealKey(&KeySource{ID: c.id, File: c.file, Env: c.env}, "key")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	k, err := loadSealKey(&KeySource{File: goodFile}, "key")
	if err != nil || !strings.HasPrefix(k.id, "k") || len(k.id) != 13 {
		t.Errorf("default id: %v, %v", k, err)
	}
	if _, err := newSealer([]*sealKey{k, k}, false); err == nil || !strings.Contains(err.Error(), "same key id") {
		t.Errorf("two keys with one id: %v", err)
	}
}

// sealV1 seals value as version 1 did (no generation, the storage key
// alone as additional data), to test that such values still open.
func sealV1(t testing.TB, k *sealKey, key string, value []byte) []byte {
	t.Helper()
	header := append([]byte(sealMagic), sealVersionV1, byte(len(k.id)))
	header = append(header, k.id...)
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	out := append(append([]byte(nil), header...), nonce...)
	return k.aead.Seal(out, nonce, value, additionalData(header, key))
}

// FuzzParseSealed: the header decoder never panics, and what it accepts
// is self-consistent.
func FuzzParseSealed(f *testing.F) {
	k := testKey(f, "seed")
	s, err := newSealer([]*sealKey{k}, false)
	if err != nil {
		f.Fatal(err)
	}
	sealed, _ := s.seal("{caddy}:v:k", 1, []byte("value"))
	v1 := sealV1(f, k, "k", []byte("value"))
	f.Add(sealed)
	f.Add(v1)
	f.Add([]byte(sealMagic))
	f.Add([]byte(sealMagic + "\x01"))
	f.Add([]byte(sealMagic + "\x01\x00"))
	f.Add([]byte(sealMagic + "\x02\x01a"))
	f.Add([]byte(sealMagic + "\x02\x01a\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte(sealMagic + "\x01\xffa"))
	f.Add([]byte(sealMagic + "\x03\x01a"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseSealed(b)
		if err != nil {
			if h.keyID != "" || h.ciphertext != nil {
				t.Fatal("partial header returned with an error")
			}
			// opening it is an error too, never the bytes
			if v, _, err := s.open("k", "{caddy}:v:k", b); err == nil && isSealed(b) {
				t.Fatalf("opened a malformed sealed value: %q", v)
			}
			return
		}
		if !keyIDRE.MatchString(h.keyID) || len(h.nonce) != nonceSize || len(h.ciphertext) < 16 {
			t.Fatalf("accepted an inconsistent header: %+v", h)
		}
		if (h.version == sealVersion) != (h.generation > 0) {
			t.Fatalf("version %d with generation %d", h.version, h.generation)
		}
		if len(h.aad)+nonceSize+len(h.ciphertext) != len(b) {
			t.Fatal("header parts do not add up to the value")
		}
		if v, _, err := s.open("k", "{caddy}:v:k", b); err == nil && !bytes.Equal(b, sealed) && !bytes.Equal(b, v1) {
			t.Fatalf("a value not sealed by the key opened: %q", v)
		}
	})
}
