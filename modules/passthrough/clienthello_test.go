package passthrough

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/trustline/trustline/internal/hellotest"
)

func TestScanGoClientHello(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      *tls.Config
		sni      string
		alpn     []string
		maxVer   uint16
		versions bool
	}{
		{"tls13", &tls.Config{ServerName: "db.example.com", NextProtos: []string{"h2", "http/1.1"}}, "db.example.com", []string{"h2", "http/1.1"}, tls.VersionTLS13, true},
		{"tls12 only", &tls.Config{ServerName: "old.example.com", MaxVersion: tls.VersionTLS12}, "old.example.com", nil, tls.VersionTLS12, true},
		{"no sni", &tls.Config{InsecureSkipVerify: true}, "", nil, tls.VersionTLS13, true},
		{"ip literal sends no sni", &tls.Config{ServerName: "127.0.0.1"}, "", nil, tls.VersionTLS13, true},
		{"many alpn over 2 KiB", &tls.Config{ServerName: "big.example.com", NextProtos: manyALPN(300)}, "big.example.com", manyALPN(300), tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := hellotest.Go(t, tc.cfg)
			h, n, err := ScanClientHello(raw)
			if err != nil {
				t.Fatalf("scan: %v", err)
			}
			if n != len(raw) {
				t.Errorf("consumed %d of %d bytes", n, len(raw))
			}
			if h.ServerName != tc.sni {
				t.Errorf("server name %q, want %q", h.ServerName, tc.sni)
			}
			if !slices.Equal(h.ALPN, tc.alpn) {
				t.Errorf("ALPN %q, want %q", h.ALPN, tc.alpn)
			}
			if h.MaxVersion() != tc.maxVer {
				t.Errorf("max version %s, want %s", versionName(h.MaxVersion()), versionName(tc.maxVer))
			}
			if (h.SupportedVersions != nil) != tc.versions {
				t.Errorf("supported_versions %v, presence want %v", h.SupportedVersions, tc.versions)
			}
			if h.Records != 1 {
				t.Errorf("records %d, want 1", h.Records)
			}
		})
	}
}

// TestScanSplitRecords reassembles one ClientHello framed into records of
// several sizes, and checks every strict prefix asks for more bytes.
func TestScanSplitRecords(t *testing.T) {
	raw := hellotest.Go(t, &tls.Config{ServerName: "split.example.com", NextProtos: manyALPN(200)})
	want, _, err := ScanClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, sizes := range [][]int{{1}, {2}, {3}, {4}, {5, 1000}, {20}, {100}, {512}, {1000, 300}, {len(raw) - 20}} {
		data := reframe(t, raw, sizes...)
		h, n, err := ScanClientHello(data)
		if err != nil {
			t.Fatalf("sizes %v: %v", sizes, err)
		}
		if n != len(data) || h.ServerName != want.ServerName || !slices.Equal(h.ALPN, want.ALPN) || h.Records < 2 {
			t.Fatalf("sizes %v: got %q %d alpn, %d records, consumed %d/%d", sizes, h.ServerName, len(h.ALPN), h.Records, n, len(data))
		}
		for k := range len(data) {
			if _, _, err := ScanClientHello(data[:k]); !isIncomplete(err) {
				t.Fatalf("sizes %v: prefix of %d bytes: %v, want incomplete", sizes, k, err)
			}
		}
	}
}

func TestReadClientHelloOneByteAtATime(t *testing.T) {
	raw := hellotest.Go(t, &tls.Config{ServerName: "slow.example.com", NextProtos: []string{"h2"}})
	data := append(reframe(t, raw, 700), []byte("trailing application bytes")...)
	h, got, err := ReadClientHello(&oneByteReader{data: data}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "slow.example.com" || !h.OffersALPN("h2") {
		t.Fatalf("got %+v", h)
	}
	// byte by byte, it must stop exactly at the end of the message
	if !bytes.Equal(got, data[:len(got)]) || len(got) != len(reframe(t, raw, 700)) {
		t.Fatalf("read %d bytes, want %d", len(got), len(reframe(t, raw, 700)))
	}
}

func TestReadClientHelloKeepsPrefetched(t *testing.T) {
	raw := hellotest.Go(t, &tls.Config{ServerName: "pre.example.com"})
	h, got, err := ReadClientHello(bytes.NewReader(raw[10:]), append([]byte(nil), raw[:10]...))
	if err != nil || h.ServerName != "pre.example.com" || !bytes.Equal(got, raw) {
		t.Fatalf("got %v %v, %d bytes", h, err, len(got))
	}
}

func TestReadClientHelloEOF(t *testing.T) {
	raw := hellotest.Go(t, &tls.Config{ServerName: "eof.example.com"})
	_, _, err := ReadClientHello(bytes.NewReader(raw[:100]), nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want unexpected EOF", err)
	}
	_, _, err = ReadClientHello(bytes.NewReader(nil), nil)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want EOF", err)
	}
}

func TestScanBadInput(t *testing.T) {
	raw := hellotest.Go(t, &tls.Config{ServerName: "x.example.com"})
	msgLen := len(raw) - 5
	withRecordLen := func(b []byte, n int) []byte {
		b = slices.Clone(b)
		b[3], b[4] = byte(n>>8), byte(n)
		return b
	}
	hugeMsg := slices.Clone(raw)
	hugeMsg[6], hugeMsg[7], hugeMsg[8] = 0x00, 0x50, 0x00 // 20 KiB message
	alertBetween := reframe(t, raw, 100)
	alertBetween = append(append(slices.Clone(alertBetween[:105]), 21, 3, 3, 0, 2, 2, 40), alertBetween[105:]...)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrNotTLS},
		{"sslv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, ErrNotTLS},
		{"ssh banner", []byte("SSH-2.0-OpenSSH_9.2\r\n"), ErrNotTLS},
		{"record version 4.x", []byte{22, 4, 1, 0, 10}, ErrNotTLS},
		{"empty record", withRecordLen(raw, 0), ErrMalformedHello},
		{"record over 16 KiB", withRecordLen(raw, 20000), ErrMalformedHello},
		{"server hello", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, ErrMalformedHello},
		{"message over 16 KiB", hugeMsg, ErrHelloTooLarge},
		{"message over 16 KiB in one-byte records", reframe(t, hugeMsg, 1), ErrHelloTooLarge},
		{"alert between fragments", alertBetween, ErrMalformedHello},
		{"truncated body", append([]byte{22, 3, 1, 0, 8, 1, 0, 0, 4}, 3, 3, 0, 0), ErrMalformedHello},
		{"record shorter than message", withRecordLen(raw[:msgLen+5-50], msgLen-50), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ScanClientHello(tc.data)
			if tc.want == nil {
				if !isIncomplete(err) {
					t.Fatalf("got %v, want incomplete", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestScanDuplicateExtensions(t *testing.T) {
	// a hand-made ClientHello with two server_name extensions
	sni := func(name string) []byte {
		n := len(name)
		return append([]byte{0, 0, 0, byte(n + 5), 0, byte(n + 3), 0, 0, byte(n)}, name...)
	}
	exts := append(sni("a.example.com"), sni("b.example.com")...)
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0, 0, 2, 0x13, 0x01, 1, 0)
	body = append(body, byte(len(exts)>>8), byte(len(exts)))
	body = append(body, exts...)
	msg := append([]byte{1, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	rec := append([]byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
	if _, _, err := ScanClientHello(rec); !errors.Is(err, ErrMalformedHello) {
		t.Fatalf("got %v, want malformed", err)
	}
	// and the same with one extension parses
	exts = sni("a.example.com")
	body = body[:2+32+7]
	body = append(body, byte(len(exts)>>8), byte(len(exts)))
	body = append(body, exts...)
	msg = append([]byte{1, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	rec = append([]byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
	h, _, err := ScanClientHello(rec)
	if err != nil || h.ServerName != "a.example.com" {
		t.Fatalf("got %v, %v", h, err)
	}
}

func TestScanOpenSSLClientHello(t *testing.T) {
	raw := opensslHello(t, "ossl.example.com", "-alpn", "h2,http/1.1")
	h, _, err := ScanClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "ossl.example.com" || !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) || h.MaxVersion() != tls.VersionTLS13 {
		t.Fatalf("got %+v", h)
	}
	raw = opensslHello(t, "ossl12.example.com", "-tls1_2")
	h, _, err = ScanClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "ossl12.example.com" || h.MaxVersion() != tls.VersionTLS12 {
		t.Fatalf("got %+v (max %s)", h, versionName(h.MaxVersion()))
	}
}

func TestGREASE(t *testing.T) {
	for _, v := range []uint16{0x0a0a, 0x1a1a, 0xfafa} {
		if !isGREASE(v) {
			t.Errorf("%#x is GREASE", v)
		}
	}
	for _, v := range []uint16{0x0303, 0x0a1a, 0x0a0b} {
		if isGREASE(v) {
			t.Errorf("%#x is not GREASE", v)
		}
	}
}

func BenchmarkScanClientHello(b *testing.B) {
	for _, bc := range []struct {
		name string
		raw  []byte
	}{
		{"one_record", hellotest.Go(b, &tls.Config{ServerName: "bench.example.com", NextProtos: []string{"h2", "http/1.1"}})},
		{"three_records", reframe(b, hellotest.Go(b, &tls.Config{ServerName: "bench.example.com", NextProtos: []string{"h2", "http/1.1"}}), 700)},
		{"alpn_4KiB", hellotest.Go(b, &tls.Config{ServerName: "bench.example.com", NextProtos: manyALPN(300)})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := ScanClientHello(bc.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestUpdateHelloSeeds rewrites testdata/hellos (fuzz seeds captured from
// openssl) when UPDATE_HELLOS=1.
func TestUpdateHelloSeeds(t *testing.T) {
	if os.Getenv("UPDATE_HELLOS") != "1" {
		t.Skip("set UPDATE_HELLOS=1 to recapture")
	}
	for name, args := range map[string][]string{
		"openssl-tls13-alpn": {"-alpn", "h2,http/1.1"},
		"openssl-tls12":      {"-tls1_2"},
		"openssl-no-ems":     {"-no_ticket", "-alpn", "x"},
	} {
		raw := opensslHello(t, "seed.example.com", args...)
		if err := os.WriteFile(filepath.Join("testdata", "hellos", name+".bin"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// bigHello returns a crypto/tls ClientHello (one record) whose message is
// as close to MaxClientHelloBytes as ALPN values of about 14 bytes take
// it, without going over.
func bigHello(t testing.TB) []byte {
	t.Helper()
	lo, hi := 0, 2000 // protocols: lo fits, hi does not
	var best []byte
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		raw := hellotest.Go(t, &tls.Config{ServerName: "big.example.com", NextProtos: manyALPN(mid)})
		if raw[0] == recordTypeHandshake && int(raw[3])<<8|int(raw[4]) == len(raw)-recordHeaderLen && len(raw)-recordHeaderLen <= MaxClientHelloBytes {
			lo, best = mid, raw
		} else {
			hi = mid
		}
	}
	if len(best)-recordHeaderLen < MaxClientHelloBytes-64 {
		t.Fatalf("the largest ClientHello is only %d bytes", len(best)-recordHeaderLen)
	}
	return best
}

// TestScanSmallRecords: records of any legal size are reassembled, up to
// the 16 KiB message limit; there is no cap on how many. An ordinary
// ClientHello in 20-byte records (about 80 of them) and a 16 KiB one in
// one-byte records (16,384 of them, 96 KiB on the wire) both parse.
func TestScanSmallRecords(t *testing.T) {
	small := hellotest.Go(t, &tls.Config{ServerName: "db.example.com", NextProtos: []string{"h2"}})
	big := bigHello(t)
	for _, tc := range []struct {
		name string
		raw  []byte
		size int
	}{
		{"ordinary hello in 20-byte records", small, 20},
		{"ordinary hello in 1-byte records", small, 1},
		{"16 KiB hello in 20-byte records", big, 20},
		{"16 KiB hello in 1-byte records", big, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, _, err := ScanClientHello(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			data := reframe(t, tc.raw, tc.size)
			wantRecords := (len(tc.raw) - recordHeaderLen + tc.size - 1) / tc.size
			h, n, err := ScanClientHello(data)
			if err != nil {
				t.Fatalf("%d bytes in %d records: %v", len(data), wantRecords, err)
			}
			if n != len(data) || h.Records != wantRecords || h.ServerName != want.ServerName || !slices.Equal(h.ALPN, want.ALPN) {
				t.Fatalf("got %q, %d ALPN, %d records, consumed %d/%d", h.ServerName, len(h.ALPN), h.Records, n, len(data))
			}
			h, got, err := ReadClientHello(&chunkReader{data: data, size: 7}, nil)
			if err != nil || h.ServerName != want.ServerName || !bytes.Equal(got, data) {
				t.Fatalf("read in 7-byte chunks: %v, %d of %d bytes", err, len(got), len(data))
			}
		})
	}
}

// TestReadClientHelloLinear feeds a 16 KiB ClientHello one byte per Read,
// framed in 64 records, in 20-byte records and in one-byte records: the
// reader must look at each byte a bounded number of times and allocate
// in proportion to the stream, not re-scan and re-copy every record on
// every read (a 16 KiB hello in 64 records cost 0.7 s of CPU that way).
func TestReadClientHelloLinear(t *testing.T) {
	big := bigHello(t)
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	// what parsing the message costs, in one record and one scan: one
	// string per ALPN value and the slice holding them
	parsing := allocated(func() { _, _, _ = ScanClientHello(big) })
	for _, size := range []int{256, 20, 1} {
		data := reframe(t, big, size)
		t.Run(fmt.Sprintf("records of %d bytes", size), func(t *testing.T) {
			var h *ClientHello
			var got []byte
			var err error
			n := allocated(func() { h, got, err = ReadClientHello(&oneByteReader{data: data}, nil) })
			if err != nil || h.ServerName != "big.example.com" || len(got) != len(data) {
				t.Fatalf("%d bytes: %v, read %d", len(data), err, len(got))
			}
			// besides parsing: the read buffer doubles up to the
			// stream's size (under 4x the stream in all), and the
			// message is copied once
			if limit := parsing + uint64(4*len(data)+MaxClientHelloBytes); n > limit {
				t.Errorf("reading %d bytes one at a time allocated %d bytes, want at most %d", len(data), n, limit)
			}
		})
		t.Run(fmt.Sprintf("records of %d bytes, bytes looked at", size), func(t *testing.T) {
			var s helloScanner
			if _, _, err := s.read(&oneByteReader{data: data}, nil); err != nil {
				t.Fatal(err)
			}
			// a record header arriving one byte at a time is checked
			// at each byte: 1+2+3+4+5 bytes for 5; every other byte once
			if s.scanned > 3*len(data) {
				t.Errorf("looked at %d bytes for a %d-byte stream", s.scanned, len(data))
			}
			s = helloScanner{}
			if _, _, err := s.scan(data); err != nil || s.scanned > len(data) {
				t.Errorf("one scan of %d bytes looked at %d (%v)", len(data), s.scanned, err)
			}
		})
	}
}

// TestScanTrailingDotSNI: the reader stores the server name lowercased,
// without a trailing dot, so "Admin.Internal." meets every route as
// "admin.internal"; a name that still ends in a dot after that one is
// stripped (an empty label) is malformed.
func TestScanTrailingDotSNI(t *testing.T) {
	raw := hellotest.Go(t, &tls.Config{ServerName: "placeholder.example.com"})
	for _, tc := range []struct {
		sent, want string
		err        error
	}{
		{"admin.internal.", "admin.internal", nil},
		{"Admin.Internal.", "admin.internal", nil},
		{"ADMIN.internal", "admin.internal", nil},
		{"admin.internal..", "", ErrMalformedHello}, // an empty label
		{".", "", ErrMalformedHello},
	} {
		h, _, err := ScanClientHello(hellotest.WithSNI(t, raw, tc.sent))
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: got %v, want %v", tc.sent, err, tc.err)
			}
			continue
		}
		if err != nil || h.ServerName != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.sent, h.ServerName, err, tc.want)
		}
	}
	set, err := newNameSet([]string{"admin.internal", "*.tenant.example"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"admin.internal": true, "admin.internal.": true, "ADMIN.Internal.": true,
		"x.tenant.example.": true, "X.Tenant.Example.": true,
		"admin.internal..": false, "tenant.example.": false, ".": false,
	} {
		if set.match(name) != want {
			t.Errorf("match(%q) = %v, want %v", name, !want, want)
		}
		if got := matchPattern("admin.internal", name) || matchPattern("*.tenant.example", name); got != want {
			t.Errorf("matchPattern(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestMaxVersionKnownVersionsOnly: only SSL 3.0 to TLS 1.3 count; an
// unknown number listed beside TLS 1.2 does not make the client a TLS 1.3
// one (refuse_tls12 was bypassed that way), and GREASE never counts.
func TestMaxVersionKnownVersionsOnly(t *testing.T) {
	raw := hellotest.Go(t, &tls.Config{ServerName: "db.example.com"})
	refuse12 := &MatchClientHello{MaxVersion: "tls1.2"}
	if err := refuse12.compile(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		versions []uint16
		want     uint16
	}{
		{"unknown above TLS 1.2", []uint16{0x0305, tls.VersionTLS12}, tls.VersionTLS12},
		{"unknown far above TLS 1.2", []uint16{0xfe00, 0x7f1c, tls.VersionTLS12, tls.VersionTLS11}, tls.VersionTLS12},
		{"GREASE beside TLS 1.2", []uint16{0x2a2a, tls.VersionTLS12}, tls.VersionTLS12},
		{"GREASE beside TLS 1.3", []uint16{0xdada, tls.VersionTLS13, tls.VersionTLS12}, tls.VersionTLS13},
		{"TLS 1.3 after an unknown one", []uint16{0x0305, tls.VersionTLS13}, tls.VersionTLS13},
		{"only unknown", []uint16{0x0305}, 0},
		{"only GREASE", []uint16{0x3a3a}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, err := ScanClientHello(hellotest.WithVersions(t, raw, tc.versions...))
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range h.SupportedVersions {
				if isGREASE(v) {
					t.Errorf("GREASE %#04x kept in %x", v, h.SupportedVersions)
				}
			}
			if got := h.MaxVersion(); got != tc.want {
				t.Errorf("MaxVersion %s, want %s", versionName(got), versionName(tc.want))
			}
			if refused := refuse12.matches(h); refused != (tc.want <= tls.VersionTLS12) {
				t.Errorf("max_version tls1.2 matched: %v, want %v", refused, !refused)
			}
		})
	}
	// without supported_versions, the legacy field decides, up to TLS 1.2
	for legacy, want := range map[uint16]uint16{tls.VersionTLS12: tls.VersionTLS12, tls.VersionTLS10: tls.VersionTLS10, 0x0305: tls.VersionTLS12, 0x0200: 0} {
		h := &ClientHello{LegacyVersion: legacy}
		if got := h.MaxVersion(); got != want {
			t.Errorf("legacy %#04x: MaxVersion %s, want %s", legacy, versionName(got), versionName(want))
		}
	}
}

// BenchmarkReadClientHelloOneByte reads a 16 KiB ClientHello in 64
// records, one byte per Read: a slow client.
func BenchmarkReadClientHelloOneByte(b *testing.B) {
	data := reframe(b, bigHello(b), 256)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ReadClientHello(&oneByteReader{data: data}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// ScanClientHello looks for a ClientHello at the start of data, the first
// bytes a client sent. It returns the parsed ClientHello and the number of
// bytes of data its records took; errIncomplete when data is a valid but
// unfinished beginning (read more and call again with all of it); or
// ErrNotTLS, ErrHelloTooLarge or ErrMalformedHello (wrapped).
func ScanClientHello(data []byte) (*ClientHello, int, error) {
	var s helloScanner
	return s.scan(data)
}
