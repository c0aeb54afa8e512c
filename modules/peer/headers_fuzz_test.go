package peer

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/net/http/httpguts"

	"github.com/trustline/trustline/internal/testpki"
)

// parseXFCC parses an X-Forwarded-Client-Cert value of one element, as
// Envoy reads it: key=value pairs separated by ";", a value either bare
// (up to the next ";" or ",") or double-quoted with backslash escapes.
// Anything else (a second element after ",", a stray quote, an
// unterminated quote) is an error.
func parseXFCC(s string) ([][2]string, error) {
	var out [][2]string
	for i := 0; i < len(s); {
		eq := strings.IndexByte(s[i:], '=')
		if eq <= 0 {
			return out, fmt.Errorf("no key at %d", i)
		}
		key := s[i : i+eq]
		if strings.ContainsAny(key, `;,"\ `) {
			return out, fmt.Errorf("bad key %q", key)
		}
		i += eq + 1
		var val strings.Builder
		if i < len(s) && s[i] == '"' {
			for i++; ; i++ {
				if i >= len(s) {
					return out, errors.New("unterminated quoted value")
				}
				if s[i] == '\\' {
					i++
					if i >= len(s) {
						return out, errors.New("escape at the end")
					}
				} else if s[i] == '"' {
					i++
					break
				}
				val.WriteByte(s[i])
			}
		} else {
			j := strings.IndexAny(s[i:], `;,"`)
			if j < 0 {
				j = len(s) - i
			}
			val.WriteString(s[i : i+j])
			i += j
		}
		out = append(out, [2]string{key, val.String()})
		if i == len(s) {
			break
		}
		if s[i] != ';' {
			return out, fmt.Errorf("%q after the value of %s: not one element", s[i], key)
		}
		i++
		if i == len(s) {
			return out, errors.New("trailing ;")
		}
	}
	return out, nil
}

// parseSFBinaryList parses an RFC 8941 list of byte sequences, as RFC 9440
// Client-Cert-Chain holds (Client-Cert is a list of one).
func parseSFBinaryList(s string) ([][]byte, error) {
	var out [][]byte
	for _, item := range strings.Split(s, ", ") {
		if len(item) < 2 || item[0] != ':' || item[len(item)-1] != ':' {
			return nil, fmt.Errorf("item %q is not a byte sequence", item)
		}
		b, err := base64.StdEncoding.Strict().DecodeString(item[1 : len(item)-1])
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// forwardedFor runs a fully configured handler for id and returns the
// headers it set.
func forwardedFor(t testing.TB, h *ForwardHeaders, id *Identity) http.Header {
	r, _ := caddyRequest(t, &tls.ConnectionState{})
	r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)[publishedVar] = id
	var got http.Header
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		got = r.Header
		return nil
	})
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	return got
}

// checkForwarded checks that every header set for id is a valid header
// value and parses back to exactly what id holds: the certificate and
// chain bytes, and the XFCC elements in order, with the values a control
// character would have broken written in their escaped forms.
func checkForwarded(t testing.TB, by string, id *Identity, got http.Header) {
	t.Helper()
	for name, vals := range got {
		for _, v := range vals {
			if !httpguts.ValidHeaderFieldValue(v) {
				t.Fatalf("%s: %q is not a valid header value", name, v)
			}
			// a tab is valid, but trimmed at either end: none in the
			// structured headers
			if strings.HasPrefix(name, "X-Peer-") && strings.ContainsRune(v, '\t') {
				continue
			}
			if strings.ContainsAny(v, "\r\n\t") {
				t.Fatalf("%s: %q holds a control character", name, v)
			}
		}
	}
	certs, err := parseSFBinaryList(got.Get("Client-Cert"))
	if err != nil || len(certs) != 1 || !bytes.Equal(certs[0], id.Raw) {
		t.Fatalf("Client-Cert %q: %v", got.Get("Client-Cert"), err)
	}
	chain, err := parseSFBinaryList(got.Get("Client-Cert-Chain"))
	if err != nil || len(chain) != len(id.Chain) {
		t.Fatalf("Client-Cert-Chain %q: %v", got.Get("Client-Cert-Chain"), err)
	}
	for i := range chain {
		if !bytes.Equal(chain[i], id.Chain[i]) {
			t.Fatalf("Client-Cert-Chain item %d differs", i)
		}
	}
	pemOf := func(ders ...[]byte) string {
		var b []byte
		for _, d := range ders {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
		}
		return string(b)
	}
	want := [][2]string{}
	if by != "" {
		want = append(want, [2]string{"By", by})
	}
	want = append(want,
		[2]string{"Hash", id.FingerprintHex},
		[2]string{"Cert", url.QueryEscape(pemOf(id.Raw))},
		[2]string{"Chain", url.QueryEscape(pemOf(id.Chain...))},
		[2]string{"Subject", escapeControls(id.Subject, '\\')})
	for _, u := range id.URIs {
		want = append(want, [2]string{"URI", escapeControls(u, '%')})
	}
	for _, d := range id.DNSNames {
		want = append(want, [2]string{"DNS", escapeControls(d, '%')})
	}
	xfcc, err := parseXFCC(got.Get("X-Forwarded-Client-Cert"))
	if err != nil {
		t.Fatalf("XFCC %q: %v", got.Get("X-Forwarded-Client-Cert"), err)
	}
	// Cert and Chain: percent-encoded PEM, compared decoded
	for i := range xfcc {
		if k := xfcc[i][0]; k == "Cert" || k == "Chain" {
			dec, err := url.PathUnescape(xfcc[i][1])
			if err != nil {
				t.Fatalf("XFCC %s: %v", k, err)
			}
			xfcc[i][1] = url.QueryEscape(dec)
		}
	}
	if fmt.Sprint(xfcc) != fmt.Sprint(want) {
		t.Fatalf("XFCC %q parses to\n%q, want\n%q", got.Get("X-Forwarded-Client-Cert"), xfcc, want)
	}
	if pemText, err := url.PathUnescape(got.Get("X-Ssl-Client-Cert")); err != nil || pemText != pemOf(id.Raw) {
		t.Fatalf("pem header %q: %v", got.Get("X-Ssl-Client-Cert"), err)
	}
	if s := got.Get("X-Peer-Subject"); s != "" && s != id.Subject {
		t.Fatalf("X-Peer-Subject %q, want %q", s, id.Subject)
	}
}

func fuzzHandler(t testing.TB, by string) (*ForwardHeaders, error) {
	h := &ForwardHeaders{
		ClientCert: true, ClientCertChain: true,
		XFCC:      &XFCC{By: by, Cert: true, Chain: true},
		PEMHeader: "X-Ssl-Client-Cert",
		Headers:   map[string]string{"X-Peer-Subject": "{peer.subject}", "X-Peer-Uri": "uri {peer.uri}"},
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return provisioned(t, h), nil
}

// FuzzForwardedHeaders builds identities from fuzzed certificate fields
// (subject, URI and DNS SANs, DER bytes) and checks that the headers
// forward_peer_identity writes parse back unambiguously: no injected ";",
// ",", quote or line break changes the structure of XFCC, Client-Cert or
// Client-Cert-Chain, and every value is one a proxy can send.
func FuzzForwardedHeaders(f *testing.F) {
	for _, s := range [][4]string{
		{"spiffe://example.org/edge", `CN=web \"blue\"\, inc,O=Acme`, "spiffe://example.org/web", "web.example.org"},
		{"", `CN=a\;b\=c`, "https://x/;a=b,c", "x;y=z,w"},
		{"by;x=\"y\"", "CN=a\nX-Evil: 1", "spiffe://a/b\r\nX: y", "a\r\nX-Spiffe-Id: spiffe://evil"},
		{"a,b", `CN=\\,O=\"`, `"quoted"`, "\ttab\t"},
		{"", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], []byte{0x30, 0x03, 0x02, 0x01, 0x01}, []byte("chain"))
	}
	f.Fuzz(func(t *testing.T, by, subject, uri, dns string, raw, chain []byte) {
		h, err := fuzzHandler(t, by)
		if err != nil {
			return // refused at config load
		}
		fp := sha256.Sum256(raw)
		id := &Identity{
			Subject: subject, URIs: []string{uri, uri + "/2"}, DNSNames: []string{dns},
			Raw: raw, Chain: [][]byte{chain, raw}, Fingerprint: fp, FingerprintHex: hex.EncodeToString(fp[:]),
		}
		checkForwarded(t, by, id, forwardedFor(t, h, id))
	})
}

// TestForwardedControlCharacters: a CA may sign a subject or a DNS SAN
// holding control characters (Go parses a DNS SAN as any ASCII). The
// forwarded headers stay valid and keep their structure: the subject's
// controls are written as RFC 4514 hex escapes ("\0A"), a SAN's as
// percent-escapes; a plain header that would hold one is not set.
func TestForwardedControlCharacters(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	leaf := ca.Issue(t, testpki.CN("web\r\nX-Spiffe-Id: spiffe://example.org/admin"),
		testpki.DNS("web\r\nX-Evil: 1", "tab\t.example.org"), testpki.URI("spiffe://example.org/web")).Cert
	id := NewIdentity(leaf, []*x509.Certificate{leaf, ca.Cert})
	if !strings.Contains(id.Subject, "\r\n") || !strings.Contains(id.DNSNames[0], "\r\n") {
		t.Fatalf("the certificate lost its control characters: %q %q", id.Subject, id.DNSNames)
	}
	h, err := fuzzHandler(t, "spiffe://example.org/edge")
	if err != nil {
		t.Fatal(err)
	}
	got := forwardedFor(t, h, id)
	checkForwarded(t, "spiffe://example.org/edge", id, got)
	xfcc := got.Get("X-Forwarded-Client-Cert")
	for _, want := range []string{`;Subject="CN=web\\0D\\0AX-Spiffe-Id: spiffe://example.org/admin";`, `;DNS="web%0D%0Ax-evil: 1";`, ";DNS=tab%09.example.org"} {
		if !strings.Contains(xfcc, want) {
			t.Errorf("XFCC %q lacks %q", xfcc, want)
		}
	}
	if v, ok := got["X-Peer-Subject"]; ok {
		t.Errorf("a header holding a line break was set: %q", v)
	}
	// the By element is refused at load when it holds a control character
	for _, by := range []string{"a\nb", "a\x00b", "a\tb"} {
		if _, err := fuzzHandler(t, by); err == nil {
			t.Errorf("xfcc by %q accepted", by)
		}
	}
}
