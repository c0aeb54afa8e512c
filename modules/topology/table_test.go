package topology

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestTableKeepsWords: the certificates table never cuts a reason (or a
// subject) in the middle of a word: a long "not read" reason is wrapped
// at word boundaries under its row, whole.
func TestTableKeepsWords(t *testing.T) {
	na := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	reason := "stat /srv/deployments/production/certificates/edge-gateway/server-certificate.pem: no such file or directory"
	rep := &Report{Generated: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Certificates: []*Certificate{
		{ID: "c1", Role: RoleServer, Source: "file /srv/deployments/production/certificates/edge-gateway/server-certificate.pem", NotRead: reason},
		{ID: "c2", Role: RoleTrustAnchor, Source: "file ca.pem", Subject: "CN=Example Corporation Internal Issuing Certification Authority 2030,O=Example Corporation", NotAfter: &na},
	}}
	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	// a subject too long for its column is cut after a whole word
	words := map[string]bool{}
	for _, w := range strings.FieldsFunc(rep.Certificates[1].Subject+" "+reason, func(r rune) bool { return r == ' ' || r == ',' }) {
		words[w] = true
	}
	for rest := table; strings.Contains(rest, "..."); {
		i := strings.Index(rest, "...")
		before := rest[:i]
		last := before[strings.LastIndexAny(before, " ,")+1:]
		if !words[last] {
			t.Errorf("a cell is cut inside the word %q:\n%s", last, table)
		}
		rest = rest[i+3:]
	}
	// the reason, whole, once the wrapped lines are joined
	if !strings.Contains(strings.Join(strings.Fields(table), " "), "not read: "+reason) {
		t.Errorf("the reason is not in the table whole:\n%s", table)
	}
	for _, w := range strings.Fields(reason) {
		if !strings.Contains(table, w) {
			t.Errorf("word %q of the reason is cut:\n%s", w, table)
		}
	}
}
