package peer

import (
	"crypto/x509/pkix"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/trustline/trustline/internal/testpki"
)

// TestSubjectPerAttribute: subject and issuer patterns match attribute by
// attribute; a "*" never reaches across an RDN (or a multi-valued RDN's
// "+") and an escaped separator inside a value is part of that value.
// Before, the subject `CN=mallory\,O=Acme` matched `CN=*,O=Acme`.
func TestSubjectPerAttribute(t *testing.T) {
	root := testpki.NewCA(t, "Root", testpki.Org("Acme"))
	forgedIssuer := testpki.NewCA(t, "evil,O=Acme")
	leaves := map[string]*Identity{
		"mallory":     NewIdentity(root.Issue(t, testpki.CN("mallory,O=Acme")).Cert, nil),
		"plus":        NewIdentity(root.Issue(t, testpki.CN("mallory+O=Acme")).Cert, nil),
		"web":         NewIdentity(root.Issue(t, testpki.CN("web"), testpki.Org("Acme")).Cert, nil),
		"web3":        NewIdentity(root.Issue(t, testpki.CN("web"), testpki.OU("x"), testpki.Org("Acme")).Cert, nil),
		"comma":       NewIdentity(root.Issue(t, testpki.CN("a,b"), testpki.Org("Acme")).Cert, nil),
		"star":        NewIdentity(root.Issue(t, testpki.CN("*.example.com")).Cert, nil),
		"notstar":     NewIdentity(root.Issue(t, testpki.CN("x.example.com")).Cert, nil),
		"multi":       NewIdentity(root.Issue(t, testpki.CN("web"), testpki.OU("payments", "eu"), testpki.Org("Acme")).Cert, nil),
		"evil-issuer": NewIdentity(forgedIssuer.Issue(t, testpki.CN("web")).Cert, nil),
		"space":       NewIdentity(root.Issue(t, testpki.CN(" web ")).Cert, nil),
		"hash":        NewIdentity(root.Issue(t, testpki.CN("#web")).Cert, nil),
	}
	if s := leaves["mallory"].Subject; s != `CN=mallory\,O=Acme` {
		t.Fatalf("Go prints the subject as %q", s)
	}
	cases := []struct {
		leaf    string
		subject string // pattern ("" for none)
		issuer  string
		want    bool
	}{
		// the finding: an escaped separator inside CN does not end it
		{"mallory", "CN=*,O=Acme", "", false},
		{"mallory", "CN=*", "", true},
		{"mallory", `CN=mallory\,O=Acme`, "", true},
		{"mallory", `CN=mallory\2CO=Acme`, "", true},
		{"mallory", `CN=mallory\2cO=Acme`, "", true},
		{"mallory", `CN=*\,O=Acme`, "", true},
		{"mallory", "CN=mallory", "", false},
		{"plus", "CN=*+O=Acme", "", false},
		{"plus", `CN=mallory\+O=Acme`, "", true},
		{"evil-issuer", "", "CN=*,O=Acme", false},
		{"evil-issuer", "", `CN=evil\,O=Acme`, true},
		{"web", "", "CN=*,O=Acme", true},
		{"web", "", "CN=Root,O=Acme", true},
		// a "*" matches within one value, and whole-RDN wildcards
		{"web", "CN=*,O=Acme", "", true},
		{"web", "CN=w*,O=Ac*", "", true},
		{"web", "CN=*b,O=*", "", true},
		{"web", "CN=x*,O=Acme", "", false},
		{"web", "cn=web,o=Acme", "", true}, // attribute types ignore case
		{"web", "CN=WEB,O=Acme", "", false},
		{"web3", "CN=*,O=Acme", "", false}, // one RDN per pattern RDN
		{"web3", "CN=*,*,O=Acme", "", true},
		{"web3", "CN=web,**", "", true},
		{"web3", "**,O=Acme", "", true},
		{"web3", "CN=*,**,O=Acme", "", true},
		{"web", "CN=*,**,O=Acme", "", false}, // "**" is one or more
		{"web", "*,*", "", true},
		{"web", "*", "", false},
		{"web", "**", "", true},
		{"web3", "CN=web,OU=x", "", false},
		{"web3", "OU=x,O=Acme", "", false},
		{"comma", `CN=a\,b,O=Acme`, "", true},
		{"comma", "CN=a*,O=Acme", "", true},
		{"comma", "CN=*b,O=Acme", "", true},
		// a literal star
		{"star", `CN=\*.example.com`, "", true},
		{"notstar", `CN=\*.example.com`, "", false},
		{"notstar", `CN=*.example.com`, "", true},
		// multi-valued RDNs, value by value, in order
		{"multi", "CN=web,OU=eu+OU=payments,O=Acme", "", true},
		{"multi", "CN=web,OU=*+OU=pay*,O=Acme", "", true},
		{"multi", "CN=web,OU=*,O=Acme", "", false},
		{"multi", "CN=web,*,O=Acme", "", true},
		// escaped leading and trailing spaces and leading "#"
		{"space", `CN=\ web\ `, "", true},
		{"space", `CN=\20web\20`, "", true},
		{"space", `CN=*web*`, "", true},
		{"hash", `CN=\#web`, "", true},
		{"hash", `CN=#776562`, "", false}, // "#..." is the hex form of a value
		{"hash", `CN=\#*`, "", true},
	}
	for _, c := range cases {
		var p Patterns
		if c.subject != "" {
			p.Subject = []string{c.subject}
		}
		if c.issuer != "" {
			p.Issuer = []string{c.issuer}
		}
		if err := p.Compile(); err != nil {
			t.Errorf("%s %q %q: %v", c.leaf, c.subject, c.issuer, err)
			continue
		}
		id := leaves[c.leaf]
		if ok, _ := p.Match(id); ok != c.want {
			t.Errorf("subject %q issuer %q vs patterns subject %q issuer %q: got %v, want %v", id.Subject, id.Issuer, c.subject, c.issuer, ok, c.want)
		}
	}
}

// TestDNPatternErrors: a DN pattern that is not RFC 4514 (plus wildcards)
// is refused when the config loads, with the reason.
func TestDNPatternErrors(t *testing.T) {
	for pattern, want := range map[string]string{
		"CN":           `"CN" has no "="`,
		"=web":         "empty attribute type",
		"C*N=web":      "attribute type",
		"CN =web":      "attribute type",
		"CN=web ,O=x":  "space at either end",
		"CN= web":      "space at either end",
		`CN=\\ `:       "space at either end",
		"CN=a,,O=x":    "empty RDN",
		"CN=a,":        "empty RDN",
		"CN=a+":        "empty attribute",
		`CN=a\`:        "ends in a lone",
		`CN=a\x`:       `escape "\x"`,
		`CN=a\4`:       `escape`,
		`CN="a"`:       "quote",
		"CN=**":        `"**"`,
		"**,CN=a,**":   `"**"`,
		"CN=a+**":      `"**"`,
		"CN=#zz":       "hex",
		"CN=#0c*":      "hex",
		"CN=a,*+O=b":   `"*"`,
		"1.2..3=#0c00": "attribute type",
	} {
		for _, f := range []Field{FieldSubject, FieldIssuer} {
			var p Patterns
			*p.list(f) = []string{pattern}
			err := p.Compile()
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s %q: error %v, want one with %q", f, pattern, err, want)
			}
		}
	}
	for _, ok := range []string{"CN=web", "2.5.4.3=web", "1.2.840.113549.1.9.1=#160f612e622e636f6d", "**", "*,**", `CN=\"quoted\"`, "CN=", "CN=a=b", "CN=web, O=Acme", "CN=web,  OU=a+ OU=b", `CN=\ a\ `, "CN=a, *, **"} {
		p := Patterns{Subject: []string{ok}}
		if err := p.Compile(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// TestDNHexForm: a value Go prints in "#" hex form (an attribute it does
// not decode) matches the same hex, in either case, and nothing else.
func TestDNHexForm(t *testing.T) {
	name := pkix.Name{CommonName: "web", ExtraNames: []pkix.AttributeTypeAndValue{{Type: []int{1, 2, 3, 4}, Value: 7}}}
	subject := name.String()
	if !strings.Contains(subject, "1.2.3.4=#020107") {
		t.Fatalf("Go prints %q", subject)
	}
	for pattern, want := range map[string]bool{
		"1.2.3.4=#020107,CN=web": true,
		"1.2.3.4=#020107,CN=*":   true,
		"1.2.3.4=#020108,CN=web": false,
		`1.2.3.4=\#020107,CN=*`:  false,
		"*,CN=web":               true,
	} {
		g, err := compileDN(pattern)
		if err != nil {
			t.Fatalf("%q: %v", pattern, err)
		}
		if got := matchDN(&g, subject); got != want {
			t.Errorf("%q vs %q: got %v", pattern, subject, got)
		}
	}
	g, err := compileDN("1.2.3.4=#02AB07,CN=*")
	if err != nil {
		t.Fatal(err)
	}
	if !matchDN(&g, "1.2.3.4=#02ab07,CN=x") {
		t.Error("hex digits compared with case")
	}
}

// matchDN matches the DN s, as Go prints it, against g.
func matchDN(g *dn, s string) bool {
	d, err := parseDN(s, false)
	return err == nil && g.match(&d)
}

// escapeDNValue escapes a value as Go's pkix.Name.String does, for tests.
func escapeDNValue(v string) string {
	var b strings.Builder
	for k, c := range v {
		switch {
		case strings.ContainsRune(`,+"\<>;`, c), c == ' ' && (k == 0 || k == len(v)-1), c == '#' && k == 0:
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// FuzzDNMatch builds subjects from fuzzed CN and O values as Go prints
// them and checks per-attribute matching: the exact pattern matches, and
// "CN=*,O=<o>" matches exactly when the subject has those two RDNs, whatever
// the CN holds.
func FuzzDNMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"web", "Acme"}, {"mallory,O=Acme", ""}, {"mallory", "Acme,OU=x"}, {"a+b", "Acme"},
		{" x ", "#y"}, {`\,`, `\`}, {"*", "*"}, {"é,ü", "Ü"}, {"", "Acme"}, {"CN=a", "O=b,O=Acme"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, cn, o string) {
		if !utf8.ValidString(cn) || !utf8.ValidString(o) {
			return // certificates hold valid UTF-8; Go prints anything else as U+FFFD
		}
		subject := pkix.Name{CommonName: cn, Organization: []string{o}}.String()
		exact := "O=" + escapeDNValue(o)
		if cn != "" {
			exact = "CN=" + escapeDNValue(cn) + "," + exact
		}
		exact = strings.ReplaceAll(exact, "*", `\*`)
		for _, c := range []struct {
			pattern string
			want    bool
		}{
			{exact, true},
			{strings.ToLower(exact[:2]) + exact[2:], true},
			{"CN=*,O=Acme", cn != "" && o == "Acme"},
			{"CN=*," + strings.ReplaceAll("O="+escapeDNValue(o), "*", `\*`), cn != ""},
			{"*,O=Acme", cn != "" && o == "Acme"},
			{"**", true},
		} {
			g, err := compileDN(c.pattern)
			if err != nil {
				t.Fatalf("%q: %v", c.pattern, err)
			}
			if got := matchDN(&g, subject); got != c.want {
				t.Fatalf("%q vs subject %q: got %v, want %v", c.pattern, subject, got, c.want)
			}
		}
		// any pattern that compiles can be matched against any string, and
		// one without wildcards matches the DN it writes
		if g, err := compileDN(cn); err == nil {
			for _, s := range []string{subject, o, "CN=" + o, o + ",O=Acme"} {
				matchDN(&g, s)
			}
			if !strings.Contains(cn, "*") && !matchDN(&g, cn) {
				t.Fatalf("pattern %q does not match itself", cn)
			}
		}
	})
}
