package passthrough

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/trustline/trustline/internal/hellotest"
)

// FuzzScanClientHello feeds arbitrary first flights to the reader. Seeds
// are real ClientHellos from crypto/tls and openssl (in one record and
// reframed into several, down to one-byte records), with a trailing-dot
// server name and unknown versions, the committed openssl captures in
// testdata/hellos, and junk. Properties: no panic; the one-shot scan and
// the reader taking a few bytes at a time agree; the server name is in
// canonical form and MaxVersion a real version or none; and whenever
// crypto/tls itself accepts the ClientHello, it reads the same server name
// (up to case) and ALPN list as we do.
func FuzzScanClientHello(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: "db.example.com", NextProtos: []string{"h2", "http/1.1"}},
		{ServerName: "old.example.com", MaxVersion: tls.VersionTLS12},
		{InsecureSkipVerify: true},
		{ServerName: "big.example.com", NextProtos: manyALPN(150)},
	} {
		raw := hellotest.Go(f, cfg)
		f.Add(raw)
		f.Add(reframe(f, raw, 200))
		f.Add(reframe(f, raw, 3, 500))
		// small records, as a slow or hostile client sends them: no cap on their number
		f.Add(reframe(f, raw, 20))
		f.Add(reframe(f, raw, 1))
		f.Add(reframe(f, raw, 1, 2, 3, 4, 7))
	}
	raw := hellotest.Go(f, &tls.Config{ServerName: "placeholder.example.com"})
	f.Add(hellotest.WithSNI(f, raw, "Admin.Internal."))
	f.Add(reframe(f, hellotest.WithSNI(f, raw, "admin.internal.."), 20))
	f.Add(hellotest.WithVersions(f, raw, 0x0305, tls.VersionTLS12))
	f.Add(hellotest.WithVersions(f, raw, 0x2a2a, 0x7f1c, tls.VersionTLS13))
	files, _ := filepath.Glob("testdata/hellos/*.bin")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Add([]byte{22, 3, 1, 0, 1, 1, 22, 3, 1, 0, 3, 0, 0, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := ScanClientHello(data)
		if err == nil {
			if n <= 0 || n > len(data) || h.Records < 1 || h.Length > MaxClientHelloBytes {
				t.Fatalf("inconsistent result: consumed %d of %d, %d records, length %d", n, len(data), h.Records, h.Length)
			}
			if v := h.MaxVersion(); v != 0 && !knownVersion(v) {
				t.Fatalf("MaxVersion %#04x is no TLS version", v)
			}
			if h.ServerName != canonicalName(h.ServerName) {
				t.Fatalf("server name %q is not in canonical form", h.ServerName)
			}
		}
		h2, _, err2 := ReadClientHello(&chunkReader{data: data, size: 1 + len(data)%17}, nil)
		switch {
		case err == nil:
			if err2 != nil || h2.ServerName != h.ServerName || !slices.Equal(h2.ALPN, h.ALPN) {
				t.Fatalf("one-shot %+v but byte by byte %+v, %v", h, h2, err2)
			}
		case isIncomplete(err):
			if !errors.Is(err2, io.ErrUnexpectedEOF) && !errors.Is(err2, io.EOF) {
				t.Fatalf("one-shot incomplete but byte by byte %v", err2)
			}
		default:
			if err2 == nil {
				t.Fatalf("one-shot %v but byte by byte parsed %+v", err, h2)
			}
		}
		if err != nil {
			return
		}
		// differential check against crypto/tls's own parser
		info := stdlibHello(data)
		if info == nil {
			return
		}
		alpn := info.SupportedProtos
		if len(alpn) == 0 {
			alpn = nil
		}
		// crypto/tls keeps the name's case (and refuses a trailing dot)
		if canonicalName(info.ServerName) != h.ServerName || !slices.Equal(alpn, h.ALPN) {
			t.Fatalf("crypto/tls read server name %q ALPN %q, we read %q %q", info.ServerName, alpn, h.ServerName, h.ALPN)
		}
	})
}

// stdlibHello runs a crypto/tls server over data and returns the
// ClientHelloInfo it parsed, or nil when it refused the bytes.
func stdlibHello(data []byte) *tls.ClientHelloInfo {
	var got *tls.ClientHelloInfo
	errStop := errors.New("stop")
	srv := tls.Server(&replayConn{data: data}, &tls.Config{
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			got = hi
			return nil, errStop
		},
	})
	_ = srv.Handshake()
	return got
}

// replayConn serves data to a TLS server and discards what it writes.
type replayConn struct {
	hellotest.Conn
	data []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

var _ net.Conn = (*replayConn)(nil)

// chunkReader serves data size bytes per Read, like a client whose
// ClientHello arrives in many small TCP segments.
type chunkReader struct {
	data []byte
	size int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.size)], r.data)
	r.data = r.data[n:]
	return n, nil
}
