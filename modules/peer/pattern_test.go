package peer

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
)

func TestGlob(t *testing.T) {
	cases := []struct {
		pattern string
		sep     byte
		in      string
		want    bool
	}{
		{"a/b/c", '/', "a/b/c", true},
		{"a/b/c", '/', "a/b/c/d", false},
		{"a/*/c", '/', "a/b/c", true},
		{"a/*/c", '/', "a/b/x/c", false},
		{"a/*/c", '/', "a//c", false},
		{"a/*", '/', "a/b", true},
		{"a/*", '/', "a/b/c", false},
		{"a/*", '/', "a", false},
		{"a/**", '/', "a/b", true},
		{"a/**", '/', "a/b/c/d", true},
		{"a/**", '/', "a", false},
		{"a/**", '/', "ab/c", false},
		{"**", '/', "x", true},
		{"**", '/', "x/y", true},
		{"**", '/', "", false},
		{"ns/*/sa/web", '/', "ns/prod/sa/web", true},
		{"ns/*/sa/web", '/', "ns/prod/sa/api", false},
		{"ns/*/sa/web", '/', "ns/prod/x/sa/web", false},
		{"ns/**/web", '/', "ns/a/b/web", true},
		{"ns/**/web", '/', "ns/web", false},
		{"ns/**/web", '/', "ns/a/web/x", false},
		{"ns/prod-*/sa/web", '/', "ns/prod-eu/sa/web", true},
		{"ns/prod-*/sa/web", '/', "ns/dev-eu/sa/web", false},
		{"*.example.com", '.', "a.example.com", true},
		{"*.example.com", '.', "a.b.example.com", false},
		{"*.example.com", '.', "example.com", false},
		{"**.svc.cluster.local", '.', "web.ns.svc.cluster.local", true},
		{"**.svc.cluster.local", '.', "svc.cluster.local", false},
		{"**.svc.cluster.local", '.', "evilsvc.cluster.local", false},
		{"api-*.example.com", '.', "api-eu.example.com", true},
		{"*@example.com", '@', "alice@example.com", true},
		{"*@example.com", '@', "alice@example.com.evil", false},
		{"web-*", 0, "web-eu", true},
		{"*-prod", 0, "web-eu-prod", true},
		{"web-*", 0, "api-eu", false},
		{"*", 0, "", false},
		{"a*b*c", 0, "axxbyyc", true},
		{"a*b*c", 0, "axxbyy", false},
	}
	for _, c := range cases {
		g, err := compileGlob(c.pattern, c.sep)
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		if got := g.match(c.in); got != c.want {
			t.Errorf("%q (sep %q) vs %q: got %v, want %v", c.pattern, c.sep, c.in, got, c.want)
		}
	}
	for _, bad := range []string{"a/**/b/**", "a/b**", "***"} {
		if _, err := compileGlob(bad, '/'); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		p    Patterns
		want string
	}{
		{Patterns{}, "no identity pattern"},
		{Patterns{SPIFFEID: []string{"spiffe://Example.org/x"}}, "trust domain characters"},
		{Patterns{SPIFFEID: []string{"spiffe://example.org"}}, `write "spiffe://example.org/**"`},
		{Patterns{SPIFFEID: []string{"spiffe://*.example.org/x"}}, "trust domain cannot hold wildcards"},
		{Patterns{SPIFFEID: []string{"https://example.org/x"}}, "scheme"},
		{Patterns{SPIFFEID: []string{"spiffe://example.org/a//b"}}, "empty"},
		{Patterns{SPIFFEID: []string{"spiffe://example.org/a/"}}, "trailing"},
		{Patterns{SPIFFEID: []string{"spiffe://example.org/a/../b"}}, "dot"},
		{Patterns{SPIFFEID: []string{"spiffe://example.org/a?x=1"}}, "spiffe_id"},
		{Patterns{SPIFFEID: []string{"spiffe://example.org/**/a/**"}}, `"**" may appear only once`},
		{Patterns{SPIFFEID: []string{"spiffe://example.org/a**"}}, `"**" may appear only once`},
		{Patterns{SPIFFEID: []string{""}}, "empty pattern"},
		{Patterns{TrustDomain: []string{"Example.org"}}, "trust domain characters"},
		{Patterns{TrustDomain: []string{"spiffe://example.org/x"}}, "a trust domain has no path"},
		{Patterns{DNS: []string{"a b.com"}}, "whitespace"},
		{Patterns{DNS: []string{"a/b.com"}}, `'/' is not allowed in a DNS name`},
		{Patterns{DNS: []string{"a..com"}}, "empty DNS label"},
		{Patterns{Email: []string{"example.com"}}, `exactly one "@"`},
		{Patterns{IP: []string{"10.0.0.300"}}, "ip"},
		{Patterns{IP: []string{"10.0.0.1/8"}}, "did you mean 10.0.0.0/8"},
		{Patterns{IP: []string{"fe80::1%eth0"}}, "zones"},
		{Patterns{Fingerprint: []string{"abc"}}, "odd number of hex digits"},
		{Patterns{Fingerprint: []string{"zz"}}, `'z' is not a hex digit`},
		{Patterns{SPKI: []string{"abcd"}}, "2 bytes, but a SHA-256 hash has 32"},
		{Patterns{Subject: []string{"CN=**"}}, `"**" has no meaning in a value`},
		{Patterns{CommonName: []string{"web**"}}, `"**" has no meaning here`},
	}
	for _, c := range cases {
		err := c.p.Compile()
		if err == nil {
			t.Errorf("%+v: no error", c.p)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %q lacks %q", c.p, err, c.want)
		}
	}
	// every bad pattern is reported, each with its field and value
	p := Patterns{DNS: []string{"a b"}, Fingerprint: []string{"abc"}}
	err := p.Compile()
	if err == nil || !strings.Contains(err.Error(), `dns "a b"`) || !strings.Contains(err.Error(), `fingerprint "abc"`) {
		t.Errorf("joined error: %v", err)
	}
}

// svid issues a client SVID-like leaf from ca.
func svid(t testing.TB, ca *testpki.CA, id string, opts ...testpki.Option) *x509.Certificate {
	return ca.Issue(t, append([]testpki.Option{testpki.URI(id)}, opts...)...).Cert
}

func TestMatch(t *testing.T) {
	ca := testpki.NewCA(t, "Test Root", testpki.Org("Acme"))
	leaf := ca.Issue(t,
		testpki.CN("web"), testpki.Org("Acme"), testpki.OU("payments", "eu"),
		testpki.URI("spiffe://example.org/ns/prod/sa/web"),
		testpki.DNS("Web.NS.svc.cluster.local", "api.example.com"),
		testpki.Email("Ops@Example.com"), testpki.IP("10.1.2.3", "2001:db8::7"),
	).Cert
	id := NewIdentity(leaf, nil)
	fp := sha256.Sum256(leaf.Raw)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	colonHex := func(b []byte) string {
		h := strings.ToUpper(hex.EncodeToString(b))
		var parts []string
		for i := 0; i < len(h); i += 2 {
			parts = append(parts, h[i:i+2])
		}
		return strings.Join(parts, ":")
	}
	cases := []struct {
		name string
		p    Patterns
		want bool
		fail Field
	}{
		{"spiffe exact", Patterns{SPIFFEID: []string{"spiffe://example.org/ns/prod/sa/web"}}, true, 0},
		{"spiffe glob", Patterns{SPIFFEID: []string{"spiffe://example.org/ns/*/sa/web"}}, true, 0},
		{"spiffe prefix", Patterns{SPIFFEID: []string{"spiffe://example.org/ns/prod/**"}}, true, 0},
		{"spiffe whole td", Patterns{SPIFFEID: []string{"spiffe://example.org/**"}}, true, 0},
		{"spiffe one segment is not a prefix", Patterns{SPIFFEID: []string{"spiffe://example.org/ns/*"}}, false, FieldSPIFFEID},
		{"spiffe other td", Patterns{SPIFFEID: []string{"spiffe://other.org/ns/prod/sa/web"}}, false, FieldSPIFFEID},
		{"spiffe other path", Patterns{SPIFFEID: []string{"spiffe://example.org/ns/dev/sa/web"}}, false, FieldSPIFFEID},
		{"spiffe OR", Patterns{SPIFFEID: []string{"spiffe://x.org/**", "spiffe://example.org/ns/prod/sa/web"}}, true, 0},
		{"trust domain", Patterns{TrustDomain: []string{"example.org"}}, true, 0},
		{"trust domain as ID", Patterns{TrustDomain: []string{"spiffe://example.org"}}, true, 0},
		{"trust domain other", Patterns{TrustDomain: []string{"example.com"}}, false, FieldTrustDomain},
		{"dns exact any case", Patterns{DNS: []string{"API.example.com"}}, true, 0},
		{"dns deep", Patterns{DNS: []string{"**.svc.cluster.local"}}, true, 0},
		{"dns one label", Patterns{DNS: []string{"*.svc.cluster.local"}}, false, FieldDNS},
		{"uri", Patterns{URI: []string{"spiffe://example.org/ns/*/sa/*"}}, true, 0},
		{"email", Patterns{Email: []string{"*@example.com"}}, true, 0},
		{"ip cidr", Patterns{IP: []string{"10.0.0.0/8"}}, true, 0},
		{"ip v6", Patterns{IP: []string{"2001:db8::7"}}, true, 0},
		{"ip none", Patterns{IP: []string{"192.168.0.0/16"}}, false, FieldIP},
		{"subject exact", Patterns{Subject: []string{"CN=web,OU=eu+OU=payments,O=Acme"}}, true, 0},
		{"subject glob", Patterns{Subject: []string{"CN=web,OU=*+OU=pay*,O=Acme"}}, true, 0},
		{"subject glob within one RDN", Patterns{Subject: []string{"CN=web,*"}}, false, FieldSubject},
		{"subject whole RDNs", Patterns{Subject: []string{"CN=web,**"}}, true, 0},
		{"cn", Patterns{CommonName: []string{"web"}}, true, 0},
		{"cn case", Patterns{CommonName: []string{"WEB"}}, false, FieldCommonName},
		{"o", Patterns{Organization: []string{"Acme"}}, true, 0},
		{"ou", Patterns{OrganizationalUnit: []string{"eu"}}, true, 0},
		{"issuer", Patterns{Issuer: []string{"CN=Test Root,O=Acme"}}, true, 0},
		{"issuer glob", Patterns{Issuer: []string{"CN=Test *,O=Acme"}}, true, 0},
		{"issuer glob within one RDN", Patterns{Issuer: []string{"CN=Test *"}}, false, FieldIssuer},
		{"fingerprint colon upper", Patterns{Fingerprint: []string{colonHex(fp[:])}}, true, 0},
		{"fingerprint plain", Patterns{Fingerprint: []string{hex.EncodeToString(fp[:])}}, true, 0},
		{"spki", Patterns{SPKI: []string{hex.EncodeToString(spki[:])}}, true, 0},
		{"fingerprint is not spki", Patterns{SPKI: []string{hex.EncodeToString(fp[:])}}, false, FieldSPKI},
		{"AND all match", Patterns{SPIFFEID: []string{"spiffe://example.org/**"}, DNS: []string{"api.example.com"}, CommonName: []string{"web"}}, true, 0},
		{"AND one fails", Patterns{SPIFFEID: []string{"spiffe://example.org/**"}, DNS: []string{"other.example.com"}}, false, FieldDNS},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.p.Compile(); err != nil {
				t.Fatal(err)
			}
			ok, fail := c.p.Match(id)
			if ok != c.want || (!ok && fail != c.fail) {
				t.Fatalf("Match = %v, %s; want %v, %s (subject %q)", ok, fail, c.want, c.fail, id.Subject)
			}
		})
	}
	p := Patterns{SPIFFEID: []string{"spiffe://example.org/**"}}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.Match(nil); ok {
		t.Fatal("a nil identity matched")
	}
}

func TestSVIDRules(t *testing.T) {
	ca := testpki.NewCA(t, "root")
	p := Patterns{SPIFFEID: []string{"spiffe://example.org/**"}}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		leaf   *x509.Certificate
		reason string
	}{
		{"two spiffe URIs", ca.Issue(t, testpki.URI("spiffe://example.org/a", "spiffe://example.org/b")).Cert, "more than one URI SAN"},
		{"non-spiffe scheme", ca.Issue(t, testpki.URI("https://example.org/a")).Cert, "scheme"},
		{"serverAuth only", svid(t, ca, "spiffe://example.org/a", testpki.ServerOnly()), "lacks clientAuth"},
		{"trust domain only", svid(t, ca, "spiffe://example.org"), "has no path"},
		{"no digitalSignature", svid(t, ca, "spiffe://example.org/a", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }), "digitalSignature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := NewIdentity(c.leaf, nil)
			if id.SPIFFEID != "" || !strings.Contains(id.SPIFFEReason, c.reason) {
				t.Fatalf("SPIFFEID %q, reason %q; want none and a reason with %q", id.SPIFFEID, id.SPIFFEReason, c.reason)
			}
			if ok, f := p.Match(id); ok || f != FieldSPIFFEID {
				t.Fatalf("matched as a SPIFFE identity (%v, %s)", ok, f)
			}
			if v := id.Value(FieldSPIFFEID); !strings.Contains(v, c.reason) {
				t.Fatalf("log value %q lacks the reason", v)
			}
		})
	}
	ok := NewIdentity(svid(t, ca, "spiffe://example.org/a", testpki.ClientOnly()), nil)
	if ok.SPIFFEID != "spiffe://example.org/a" || ok.TrustDomain != "example.org" || ok.SPIFFEReason != "" {
		t.Fatalf("client-only SVID: %+v", ok)
	}
}

func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org/ns/*/sa/web", "spiffe://example.org/**", "spiffe://example.org",
		"dns:*.svc", "dns:**.svc.cluster.local", "ip:10.0.0.0/8", "ip:::1", "sha256:ab:cd",
		"spki:" + strings.Repeat("a", 64), "subject:CN=*,O=Acme", "email:*@x.org", "uri:https://x/**",
		"trust_domain:example.org", "cn:web", "o:Acme", "ou:x", "issuer:CN=root", "spiffe://a/**/b/**",
		`CN=a\,b,O=*`, "**,O=Acme", `CN=\#x\2C*+OU=y,*,**`, "1.2.3.4=#0c01,CN=*",
	} {
		f.Add(s, "spiffe://example.org/ns/prod/sa/web")
	}
	f.Fuzz(func(t *testing.T, pattern, value string) {
		for field := Field(0); field < numFields; field++ {
			var p Patterns
			l := p.list(field)
			*l = []string{pattern}
			if err := p.Compile(); err != nil {
				continue
			}
			// a compiled pattern never panics when matched
			id := &Identity{
				SPIFFEID: "spiffe://example.org/" + value, TrustDomain: "example.org", spiffePath: value,
				DNSNames: []string{value}, URIs: []string{value}, Emails: []string{value},
				Subject: value, CommonName: value, Organizations: []string{value},
				OrganizationalUnits: []string{value}, Issuer: value,
			}
			p.Match(id)
		}
		// the glob engine: a pattern without wildcards matches itself only
		for _, sep := range []byte{0, '/', '.'} {
			g, err := compileGlob(pattern, sep)
			if err != nil {
				continue
			}
			if !strings.Contains(pattern, "*") && g.match(value) != (pattern == value) {
				t.Fatalf("literal %q vs %q", pattern, value)
			}
			if !strings.Contains(pattern, "*") && !g.match(pattern) {
				t.Fatalf("literal %q does not match itself", pattern)
			}
		}
	})
}

// BenchmarkMatchSubject matches a cached identity against subject and
// issuer DN patterns, the matching subject pattern last.
func BenchmarkMatchSubject(b *testing.B) {
	leaf, ca := benchLeaf(b)
	p := Patterns{
		Subject: []string{"CN=api,OU=payments,O=Acme", "CN=web-*,OU=payments,O=Other", "CN=*,OU=pay*,O=Acme"},
		Issuer:  []string{"CN=intermediate,O=Acme", "CN=root,O=Acme"},
	}
	if err := p.Compile(); err != nil {
		b.Fatal(err)
	}
	id := FromChains([][]*x509.Certificate{{leaf, ca.Cert}})
	if id.Subject != "CN=web,OU=payments,O=Acme" {
		b.Fatalf("subject %q", id.Subject)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := p.Match(id); !ok {
			b.Fatal("no match")
		}
	}
}

// TestDescribe: Describe names each field by its JSON key (what a config
// holds, and what the topology report prints), fields and values sorted.
func TestDescribe(t *testing.T) {
	var p Patterns
	var want []string
	v := reflect.ValueOf(&p).Elem()
	for i := range v.NumField() {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if tag == "" {
			continue
		}
		v.Field(i).Set(reflect.ValueOf([]string{"b" + tag, "a" + tag}))
		want = append(want, tag+" a"+tag+", b"+tag)
	}
	slices.Sort(want)
	if got := p.Describe(); !slices.Equal(got, want) {
		t.Errorf("Describe() = %q\nwant %q", got, want)
	}
}
