package redis

import (
	"bytes"
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// A sealed value (README.md, "Encryption at rest") is laid out as:
//
//	0x00 'T' 'L' 'E' | 0x02 | len(id) | id | generation (8) | nonce (12) | ciphertext+tag
//
// (a PEM or JSON value never starts with 0x00). The additional data is the
// header, a 0x00 and the value's Redis key ("{prefix}:v:<key>"). Version 1
// (read, never written) had no generation and bound the key without prefix.
const (
	sealMagic     = "\x00TLE"
	sealVersion   = 2
	sealVersionV1 = 1
	generationLen = 8
	nonceSize     = 12
	maxKeyIDLen   = 64
)

// errNotSealed means that the value does not carry the sealed header.
var errNotSealed = errors.New("value is not encrypted")

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9._:@+-]{1,64}$`)

type sealedHeader struct {
	version    byte
	keyID      string
	generation int64  // 0 in version 1
	aad        []byte // magic..generation, the first part of the additional data
	nonce      []byte
	ciphertext []byte
}

// isSealed tells whether b starts with the sealed-value magic.
func isSealed(b []byte) bool { return bytes.HasPrefix(b, []byte(sealMagic)) }

// parseSealed decodes the header of a sealed value. It never panics, whatever b is.
func parseSealed(b []byte) (sealedHeader, error) {
	if !isSealed(b) {
		return sealedHeader{}, errNotSealed
	}
	rest := b[len(sealMagic):]
	if len(rest) < 2 {
		return sealedHeader{}, errors.New("sealed value truncated in its header")
	}
	version := rest[0]
	if version != sealVersion && version != sealVersionV1 {
		return sealedHeader{}, fmt.Errorf("sealed value has format version %d, this build reads versions %d and %d", version, sealVersionV1, sealVersion)
	}
	n := int(rest[1])
	rest = rest[2:]
	if n == 0 || n > maxKeyIDLen || len(rest) < n {
		return sealedHeader{}, errors.New("sealed value has a malformed key id")
	}
	id := string(rest[:n])
	if !keyIDRE.MatchString(id) {
		return sealedHeader{}, errors.New("sealed value has a malformed key id")
	}
	rest = rest[n:]
	var gen int64
	if version == sealVersion {
		if len(rest) < generationLen {
			return sealedHeader{}, fmt.Errorf("sealed value (key id %q) is truncated", id)
		}
		gen = int64(binary.BigEndian.Uint64(rest))
		if gen <= 0 {
			return sealedHeader{}, fmt.Errorf("sealed value (key id %q) has a malformed generation", id)
		}
		rest = rest[generationLen:]
	}
	if len(rest) < nonceSize+16 {
		return sealedHeader{}, fmt.Errorf("sealed value (key id %q) is truncated", id)
	}
	return sealedHeader{version: version, keyID: id, generation: gen, aad: b[:len(b)-len(rest)],
		nonce: rest[:nonceSize], ciphertext: rest[nonceSize:]}, nil
}

// sealKey is one configured encryption key.
type sealKey struct {
	id     string
	source string // "key_file /path" or "key_env VAR", for errors; never the key
	aead   cipher.AEAD
}

// sealer seals with its first key and opens with any of them.
type sealer struct {
	keys                []*sealKey // keys[0] writes
	byID                map[string]*sealKey
	allowPlaintextReads bool
}

func newSealer(keys []*sealKey, allowPlaintextReads bool) (*sealer, error) {
	s := &sealer{keys: keys, byID: make(map[string]*sealKey, len(keys)), allowPlaintextReads: allowPlaintextReads}
	for _, k := range keys {
		if prev, dup := s.byID[k.id]; dup {
			return nil, fmt.Errorf("%s and %s have the same key id %q", prev.source, k.source, k.id)
		}
		s.byID[k.id] = k
	}
	return s, nil
}

func additionalData(header []byte, key string) []byte {
	ad := make([]byte, 0, len(header)+1+len(key))
	ad = append(ad, header...)
	ad = append(ad, 0)
	return append(ad, key...)
}

// seal encrypts value under the current key, for the value at redisKey
// (the key as Redis sees it, prefix included), with generation gen (> 0).
func (s *sealer) seal(redisKey string, gen int64, value []byte) ([]byte, error) {
	k := s.keys[0]
	header := make([]byte, 0, len(sealMagic)+2+len(k.id)+generationLen)
	header = append(header, sealMagic...)
	header = append(header, sealVersion, byte(len(k.id)))
	header = append(header, k.id...)
	header = binary.BigEndian.AppendUint64(header, uint64(gen))
	out := make([]byte, len(header)+nonceSize, len(header)+nonceSize+len(value)+k.aead.Overhead())
	copy(out, header)
	nonce := out[len(header):]
	rand.Read(nonce) // never fails (crypto/rand)
	return k.aead.Seal(out, nonce, value, additionalData(header, redisKey)), nil
}

// open decrypts a stored value: key is the storage key (named in errors,
// and bound by version 1), redisKey the key as Redis sees it (bound by
// version 2). It returns the value's generation (0 for version 1). A value
// without the sealed header is refused unless plaintext reads are allowed;
// without encryption (s nil), a sealed value is an error, never the
// ciphertext.
func (s *sealer) open(key, redisKey string, stored []byte) ([]byte, int64, error) {
	h, err := parseSealed(stored)
	switch {
	case errors.Is(err, errNotSealed) && (s == nil || s.allowPlaintextReads):
		return stored, 0, nil
	case errors.Is(err, errNotSealed):
		return nil, 0, fmt.Errorf("value at %q is not encrypted (it was written without encryption); "+
			"set allow_plaintext_reads in the encryption block while migrating", key)
	case s == nil: // the key id is "" when the header does not parse
		return nil, 0, fmt.Errorf("value at %q is encrypted (key id %q) but this storage has no encryption block", key, cmp.Or(h.keyID, "?"))
	case err != nil:
		return nil, 0, fmt.Errorf("value at %q: %w", key, err)
	}
	k, ok := s.byID[h.keyID]
	if !ok {
		return nil, 0, fmt.Errorf("value at %q is encrypted with key id %q, which is not configured (configured ids: %s)",
			key, h.keyID, s.ids())
	}
	bound := redisKey
	if h.version == sealVersionV1 {
		bound = key
	}
	plain, err := k.aead.Open(nil, h.nonce, h.ciphertext, additionalData(h.aad, bound))
	if err != nil {
		return nil, 0, fmt.Errorf("value at %q does not open with key id %q (%s): wrong key, or the value was modified in Redis "+
			"or moved there from another key or key prefix",
			key, k.id, k.source)
	}
	return plain, h.generation, nil
}

func (s *sealer) ids() string {
	var ids []string
	for _, k := range s.keys {
		ids = append(ids, k.id)
	}
	return strings.Join(ids, ", ")
}

// parseKeyMaterial turns the content of a key file or variable into a
// 256-bit key: 32 raw bytes, or 64 hex digits, or base64 (standard or URL
// alphabet, padded or not) of 32 bytes; surrounding whitespace is ignored
// in the text forms.
func parseKeyMaterial(data []byte) ([]byte, error) {
	if len(data) == 32 {
		return append([]byte(nil), data...), nil
	}
	text := strings.TrimSpace(string(data))
	if len(text) == 64 {
		if b, err := hex.DecodeString(text); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(text); err == nil {
			if len(b) == 32 {
				return b, nil
			}
			return nil, fmt.Errorf("decodes (base64) to %d bytes, want 32 (make one with `openssl rand -base64 32`)", len(b))
		}
	}
	return nil, fmt.Errorf("want a 256-bit key: 32 raw bytes, 64 hex digits or base64 of 32 bytes (make one with `openssl rand -base64 32`); got %d bytes", len(data))
}

// defaultKeyID derives a key id from the key itself, so that an id need not
// be configured: a fingerprint that does not reveal the key.
func defaultKeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("trustline storage redis key id\x00"), key...))
	return "k" + hex.EncodeToString(sum[:6])
}

// loadSealKey reads a key from a file or an environment variable.
func loadSealKey(ks *KeySource, setting string) (*sealKey, error) {
	var data []byte
	var source string
	var err error
	switch {
	case ks.File != "" && ks.Env != "":
		return nil, fmt.Errorf("%s: give a file or an environment variable, not both", setting)
	case ks.File != "":
		source = setting + "_file " + ks.File
		if data, err = os.ReadFile(ks.File); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	case ks.Env != "":
		source = setting + "_env " + ks.Env
		if data = []byte(os.Getenv(ks.Env)); len(data) == 0 {
			return nil, fmt.Errorf("%s: the environment variable is not set", source)
		}
	default:
		return nil, fmt.Errorf("%s: a key file or an environment variable is required", setting)
	}
	raw, err := parseKeyMaterial(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	id := ks.ID
	if id == "" {
		id = defaultKeyID(raw)
	} else if !keyIDRE.MatchString(id) {
		return nil, fmt.Errorf("%s: key id %q: use 1 to 64 of A-Z a-z 0-9 . _ : @ + -", source, id)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return &sealKey{id: id, source: source, aead: aead}, nil
}
