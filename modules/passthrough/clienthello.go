package passthrough

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// The ClientHello reader assembles the whole ClientHello from the first
// records of a connection (several records, over several TCP segments)
// and parses the few fields routing needs; it never writes.

const (
	recordTypeHandshake      = 22
	handshakeTypeClientHello = 1
	recordHeaderLen          = 5
	handshakeHeaderLen       = 4

	// maxRecordPayload is the largest TLSPlaintext fragment (RFC 8446 5.1).
	maxRecordPayload = 1 << 14

	// MaxClientHelloBytes is the largest ClientHello message (handshake
	// header included) the reader assembles; a larger one is refused.
	MaxClientHelloBytes = 16 << 10

	// maxHelloStreamBytes bounds how many bytes the reader takes: the
	// largest message in records of one byte each, so that any framing
	// of a ClientHello within MaxClientHelloBytes fits.
	maxHelloStreamBytes = MaxClientHelloBytes * (1 + recordHeaderLen)

	extServerName        = 0
	extALPN              = 16
	extSupportedVersions = 43
)

var (
	// ErrNotTLS means the first bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrHelloTooLarge means the ClientHello is over MaxClientHelloBytes.
	ErrHelloTooLarge = errors.New("ClientHello too large")
	// ErrMalformedHello means the records or the ClientHello in them
	// break the TLS encoding rules.
	ErrMalformedHello = errors.New("malformed ClientHello")

	// errIncomplete means the bytes so far are a valid beginning of a
	// ClientHello: more are needed.
	errIncomplete = errors.New("incomplete ClientHello")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedHello, fmt.Sprintf(format, args...))
}

// ClientHello holds what routing reads from a TLS ClientHello.
type ClientHello struct {
	// ServerName is the host_name of the server_name extension in the
	// form every route compares: ASCII lowercase, one trailing dot
	// removed (canonicalName); empty when the client sent none.
	ServerName string
	// ALPN is the list of application protocols offered, in order.
	ALPN []string
	// SupportedVersions lists the supported_versions extension's values
	// without GREASE; nil when the extension is absent.
	SupportedVersions []uint16
	// LegacyVersion is the ClientHello's legacy_version field.
	LegacyVersion uint16
	// Records is how many TLS records the message spanned.
	Records int
	// Length is the size of the handshake message, header included.
	Length int
}

// MaxVersion is the highest protocol version the client offers that is
// one: SSL 3.0 to TLS 1.3. Values no version has (GREASE, drafts, a
// future 0x0305) are ignored, since no server can negotiate them: a
// client listing [0x0305, 0x0303] gets TLS 1.2 at best, so its
// MaxVersion is TLS 1.2. 0 when it offers no known version at all.
func (h *ClientHello) MaxVersion() uint16 {
	offered := h.SupportedVersions
	if offered == nil {
		// without supported_versions, TLS 1.3 cannot be negotiated
		offered = []uint16{min(h.LegacyVersion, tls.VersionTLS12)}
	}
	var v uint16
	for _, sv := range offered {
		if knownVersion(sv) {
			v = max(v, sv)
		}
	}
	return v
}

// knownVersion reports whether v is a protocol version a server may
// negotiate: SSL 3.0 to TLS 1.3.
func knownVersion(v uint16) bool {
	return v >= 0x0300 && v <= tls.VersionTLS13
}

// OffersALPN reports whether proto is among the offered protocols.
func (h *ClientHello) OffersALPN(proto string) bool {
	return slices.Contains(h.ALPN, proto)
}

// helloScanner reassembles a ClientHello from the first bytes of a stream
// incrementally: each call to scan gets the whole stream so far and looks
// only at the bytes it has not seen, copying each at most once (never
// when the first record holds the whole message), so the cost is linear
// however the client splits it. Once scan returned anything but
// errIncomplete, the scanner is spent.
type helloScanner struct {
	off     int                      // stream bytes consumed so far
	recEnd  int                      // stream offset where the current record ends (== off between records)
	records int                      // records begun
	hdr     [handshakeHeaderLen]byte // the handshake header, until it is complete
	hdrN    int
	msg     []byte // the message assembled so far when it spans records
	msgLen  int    // its full length, header included; 0 until known
	// scanned counts the bytes reassembly looked at over all calls,
	// parsing the finished message aside (tests check it stays linear in
	// the stream's length).
	scanned int
}

// scan returns the ClientHello at the start of data and the number of
// bytes of data its records took; errIncomplete when data is a valid but
// unfinished beginning (call again with more); or ErrNotTLS,
// ErrHelloTooLarge or ErrMalformedHello (wrapped).
func (s *helloScanner) scan(data []byte) (*ClientHello, int, error) {
	for {
		if s.off == s.recEnd {
			rest := data[s.off:]
			n := min(len(rest), recordHeaderLen)
			s.scanned += n
			if n > 0 {
				if err := checkRecordHeader(rest[:n], s.records == 0); err != nil {
					return nil, 0, err
				}
			}
			if n < recordHeaderLen {
				return nil, 0, errIncomplete
			}
			s.records++
			s.off += recordHeaderLen
			s.recEnd = s.off + (int(rest[3])<<8 | int(rest[4]))
		}
		avail := min(len(data), s.recEnd) - s.off
		if avail == 0 {
			return nil, 0, errIncomplete
		}
		if s.msgLen == 0 {
			// the handshake header, which may itself span records
			n := copy(s.hdr[s.hdrN:], data[s.off:s.off+avail])
			s.hdrN += n
			s.off += n
			s.scanned += n
			if s.hdrN < handshakeHeaderLen {
				continue
			}
			bodyLen, err := checkHandshakeHeader(s.hdr[:])
			if err != nil {
				return nil, 0, err
			}
			s.msgLen = handshakeHeaderLen + bodyLen
			if s.records > 1 || s.off+bodyLen > s.recEnd {
				s.msg = append(make([]byte, 0, s.msgLen), s.hdr[:]...)
			}
			avail -= n
		}
		if s.msg == nil {
			// the whole message in the first record: parsed in place
			if len(data) < recordHeaderLen+s.msgLen {
				return nil, 0, errIncomplete
			}
			return s.parse(data[recordHeaderLen:recordHeaderLen+s.msgLen], len(data))
		}
		take := min(avail, s.msgLen-len(s.msg))
		s.msg = append(s.msg, data[s.off:s.off+take]...)
		s.off += take
		s.scanned += take
		if len(s.msg) == s.msgLen {
			return s.parse(s.msg, len(data))
		}
	}
}

func (s *helloScanner) parse(msg []byte, dataLen int) (*ClientHello, int, error) {
	h, err := parseClientHelloBody(msg[handshakeHeaderLen:])
	if err != nil {
		return nil, 0, err
	}
	h.Records, h.Length = s.records, s.msgLen
	// the rest of the record, if any, belongs to the stream too
	return h, min(dataLen, s.recEnd), nil
}

// checkRecordHeader checks the (possibly partial) record header at the
// start of b: the first record's type and version tell TLS from the rest.
func checkRecordHeader(b []byte, first bool) error {
	var bad error
	switch {
	case b[0] != recordTypeHandshake:
		bad = malformed("record of type %d inside the ClientHello", b[0])
	case len(b) >= 2 && b[1] != 3:
		bad = malformed("record version %d.x inside the ClientHello", b[1])
	case len(b) >= 3 && b[2] > 4:
		bad = malformed("record version 3.%d inside the ClientHello", b[2])
	}
	if bad != nil && first {
		return ErrNotTLS
	}
	if bad != nil {
		return bad
	}
	if len(b) >= 5 {
		n := int(b[3])<<8 | int(b[4])
		if n == 0 {
			return malformed("empty handshake record")
		}
		if n > maxRecordPayload {
			return malformed("record of %d bytes, over the %d-byte limit", n, maxRecordPayload)
		}
	}
	return nil
}

// checkHandshakeHeader checks the 4-byte handshake header at the start of
// b and returns the message body length.
func checkHandshakeHeader(b []byte) (int, error) {
	if b[0] != handshakeTypeClientHello {
		return 0, malformed("first handshake message has type %d, not ClientHello", b[0])
	}
	n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if handshakeHeaderLen+n > MaxClientHelloBytes {
		return 0, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrHelloTooLarge, handshakeHeaderLen+n, MaxClientHelloBytes)
	}
	return n, nil
}

// parseClientHelloBody parses the ClientHello body (RFC 8446 4.1.2).
func parseClientHelloBody(body []byte) (*ClientHello, error) {
	s := cryptobyte.String(body)
	h := new(ClientHello)
	var sessionID, suites, compression cryptobyte.String
	if !s.ReadUint16(&h.LegacyVersion) || !s.Skip(32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return nil, malformed("truncated fixed fields")
	}
	if len(sessionID) > 32 {
		return nil, malformed("session id of %d bytes", len(sessionID))
	}
	if len(suites) < 2 || len(suites)%2 != 0 {
		return nil, malformed("cipher suite list of %d bytes", len(suites))
	}
	if len(compression) < 1 {
		return nil, malformed("empty compression method list")
	}
	if s.Empty() {
		return h, nil // no extensions (SSL 3.0 style)
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return nil, malformed("bad extensions block")
	}
	seen := make([]uint16, 0, 3)
	for !exts.Empty() {
		var typ uint16
		var ext cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&ext) {
			return nil, malformed("truncated extension")
		}
		var name string
		var parse func(cryptobyte.String, *ClientHello) error
		switch typ {
		case extServerName:
			name, parse = "server_name", parseSNI
		case extALPN:
			name, parse = "ALPN", parseALPN
		case extSupportedVersions:
			name, parse = "supported_versions", parseVersions
		default:
			continue
		}
		if slices.Contains(seen, typ) {
			return nil, malformed("duplicate %s extension", name)
		}
		seen = append(seen, typ)
		if err := parse(ext, h); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func parseSNI(ext cryptobyte.String, h *ClientHello) error {
	var list cryptobyte.String
	if !ext.ReadUint16LengthPrefixed(&list) || !ext.Empty() || list.Empty() {
		return malformed("bad server_name list")
	}
	for !list.Empty() {
		var nameType uint8
		var name cryptobyte.String
		if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
			return malformed("truncated server_name entry")
		}
		if nameType != 0 {
			continue
		}
		if h.ServerName != "" {
			return malformed("two host_name entries in server_name")
		}
		if len(name) == 0 {
			return malformed("empty host_name")
		}
		h.ServerName = canonicalName(string(name))
		if h.ServerName == "" || strings.HasSuffix(h.ServerName, ".") {
			// an empty label: no host has such a name, and leaving the
			// dot would make canonicalName strip it again elsewhere
			return malformed("host_name %q ends in an empty label", name)
		}
	}
	return nil
}

func parseALPN(ext cryptobyte.String, h *ClientHello) error {
	var list cryptobyte.String
	if !ext.ReadUint16LengthPrefixed(&list) || !ext.Empty() || list.Empty() {
		return malformed("bad ALPN list")
	}
	for !list.Empty() {
		var proto cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&proto) || len(proto) == 0 {
			return malformed("bad ALPN protocol name")
		}
		h.ALPN = append(h.ALPN, string(proto))
	}
	return nil
}

func parseVersions(ext cryptobyte.String, h *ClientHello) error {
	var list cryptobyte.String
	if !ext.ReadUint8LengthPrefixed(&list) || !ext.Empty() || len(list) < 2 || len(list)%2 != 0 {
		return malformed("bad supported_versions list")
	}
	h.SupportedVersions = make([]uint16, 0, len(list)/2)
	for !list.Empty() {
		var v uint16
		list.ReadUint16(&v)
		if isGREASE(v) {
			continue
		}
		h.SupportedVersions = append(h.SupportedVersions, v)
	}
	return nil
}

// isGREASE reports whether v is a GREASE value (RFC 8701): 0x?a?a with
// both bytes equal.
func isGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}

// ReadClientHello reads from r, after the bytes already in buf, until the
// bytes hold a whole ClientHello. It returns the ClientHello and every
// byte read (buf's included), which the caller replays to whoever handles
// the connection next. Deadlines are the caller's business: set one on
// the connection first.
func ReadClientHello(r io.Reader, buf []byte) (*ClientHello, []byte, error) {
	var s helloScanner
	return s.read(r, buf)
}

func (s *helloScanner) read(r io.Reader, buf []byte) (*ClientHello, []byte, error) {
	for {
		if len(buf) > 0 {
			h, _, err := s.scan(buf)
			if !errors.Is(err, errIncomplete) {
				return h, buf, err
			}
		}
		if len(buf) >= maxHelloStreamBytes {
			return nil, buf, fmt.Errorf("%w: no complete ClientHello in %d bytes", ErrHelloTooLarge, len(buf))
		}
		if cap(buf)-len(buf) < 512 && cap(buf) < maxHelloStreamBytes {
			grown := make([]byte, len(buf), min(max(2*cap(buf), 2048), maxHelloStreamBytes))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), maxHelloStreamBytes)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if h, _, serr := s.scan(buf); serr == nil {
				return h, buf, nil // the last bytes came with the error
			}
			if errors.Is(err, io.EOF) {
				if len(buf) == 0 {
					return nil, buf, fmt.Errorf("connection closed before any byte: %w", err)
				}
				return nil, buf, fmt.Errorf("connection closed after %d bytes of an incomplete ClientHello: %w", len(buf), io.ErrUnexpectedEOF)
			}
			return nil, buf, err
		}
	}
}

var versionNames = map[uint16]string{0: "none", 0x0300: "ssl3.0",
	tls.VersionTLS10: "tls1.0", tls.VersionTLS11: "tls1.1", tls.VersionTLS12: "tls1.2", tls.VersionTLS13: "tls1.3"}

// versionName is the usual name of a TLS version number.
func versionName(v uint16) string {
	if name, ok := versionNames[v]; ok {
		return name
	}
	return fmt.Sprintf("0x%04x", v)
}

// parseVersionName is versionName's inverse for the versions a config
// may name (TLS 1.0 to 1.3, "tls" optional).
func parseVersionName(s string) (uint16, bool) {
	s = strings.TrimPrefix(strings.ToLower(s), "tls")
	for v := uint16(tls.VersionTLS10); v <= tls.VersionTLS13; v++ {
		if versionNames[v] == "tls"+s {
			return v, true
		}
	}
	return 0, false
}
