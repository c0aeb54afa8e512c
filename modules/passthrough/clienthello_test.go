package passthrough

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
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
		{"tls13", &tls.Config{ServerName: "db.example.com", NextProtos: []string{"h2", "http/1.1"}}, "db.example.com", []string{"h2", "http/1.1"}, VersionTLS13, true},
		{"tls12 only", &tls.Config{ServerName: "old.example.com", MaxVersion: tls.VersionTLS12}, "old.example.com", nil, VersionTLS12, true},
		{"no sni", &tls.Config{InsecureSkipVerify: true}, "", nil, VersionTLS13, true},
		{"ip literal sends no sni", &tls.Config{ServerName: "127.0.0.1"}, "", nil, VersionTLS13, true},
		{"many alpn over 2 KiB", &tls.Config{ServerName: "big.example.com", NextProtos: manyALPN(300)}, "big.example.com", manyALPN(300), VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := goHello(t, tc.cfg)
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
	raw := goHello(t, &tls.Config{ServerName: "split.example.com", NextProtos: manyALPN(200)})
	want, _, err := ScanClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, sizes := range [][]int{{1}, {2}, {3}, {4}, {5, 1000}, {100}, {512}, {1000, 300}, {len(raw) - 20}} {
		data := reframe(t, raw, sizes...)
		h, n, err := ScanClientHello(data)
		if err != nil {
			if errors.Is(err, ErrHelloTooLarge) && sizes[0] < 100 {
				continue // too many records: checked below
			}
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
	raw := goHello(t, &tls.Config{ServerName: "slow.example.com", NextProtos: []string{"h2"}})
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
	raw := goHello(t, &tls.Config{ServerName: "pre.example.com"})
	h, got, err := ReadClientHello(bytes.NewReader(raw[10:]), append([]byte(nil), raw[:10]...))
	if err != nil || h.ServerName != "pre.example.com" || !bytes.Equal(got, raw) {
		t.Fatalf("got %v %v, %d bytes", h, err, len(got))
	}
}

func TestReadClientHelloEOF(t *testing.T) {
	raw := goHello(t, &tls.Config{ServerName: "eof.example.com"})
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
	raw := goHello(t, &tls.Config{ServerName: "x.example.com"})
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
		{"one byte per record", reframe(t, raw, 1), ErrHelloTooLarge},
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
	if h.ServerName != "ossl.example.com" || !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) || h.MaxVersion() != VersionTLS13 {
		t.Fatalf("got %+v", h)
	}
	raw = opensslHello(t, "ossl12.example.com", "-tls1_2")
	h, _, err = ScanClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "ossl12.example.com" || h.MaxVersion() != VersionTLS12 {
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
		{"one_record", goHello(b, &tls.Config{ServerName: "bench.example.com", NextProtos: []string{"h2", "http/1.1"}})},
		{"three_records", reframe(b, goHello(b, &tls.Config{ServerName: "bench.example.com", NextProtos: []string{"h2", "http/1.1"}}), 700)},
		{"alpn_4KiB", goHello(b, &tls.Config{ServerName: "bench.example.com", NextProtos: manyALPN(300)})},
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
