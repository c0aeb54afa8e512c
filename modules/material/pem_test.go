package material

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/revocation/revocationtest"
)

// cutInBlock is data cut in the middle of its n-th PEM block (0-based):
// what a non-atomic copy leaves on disk for a moment.
func cutInBlock(t *testing.T, data []byte, n int) []byte {
	t.Helper()
	at := 0
	for i := 0; i <= n; i++ {
		j := bytes.Index(data[at:], []byte("-----BEGIN"))
		if j < 0 {
			t.Fatalf("no block %d", n)
		}
		at += j + 1
	}
	end := bytes.Index(data[at:], []byte("-----END"))
	return append([]byte(nil), data[:at+end/2]...)
}

// lineOf is the 1-based line on which needle first occurs after from.
func lineOf(data []byte, from int, needle string) int {
	i := from + bytes.Index(data[from:], []byte(needle))
	return 1 + bytes.Count(data[:i], []byte("\n"))
}

func TestStrictPEM(t *testing.T) {
	root := testpki.NewCA(t, "root")
	a, b, c := testpki.NewCA(t, "a"), testpki.NewCA(t, "b"), testpki.NewCA(t, "c")
	leaf := root.Issue(t, testpki.CN("me"))
	three := append(append(a.CertPEM(), b.CertPEM()...), c.CertPEM()...)
	secondBegin := bytes.Index(three[1:], []byte("-----BEGIN")) + 1
	// a's block whole, then the head of b's: a new version written over
	// the old one in two goes
	cutLast := cutInBlock(t, three, 1)
	// b cut, then c whole: a cut file with a good one appended
	cutMiddle := append(cutInBlock(t, three, 1), append([]byte("\n"), c.CertPEM()...)...)
	commented := append([]byte("# corporate roots\nsubject=CN = a\nissuer=CN = a\n"), a.CertPEM()...)
	commented = append(append(commented, "subject=CN = b\n"...), b.CertPEM()...)

	for _, tc := range []struct {
		name     string
		data     []byte
		want     int    // certificates, when no error
		wantLine int    // the line the error names
		wantErr  string // a substring of the error
	}{
		{"whole bundle", three, 3, 0, ""},
		{"explanatory text before blocks", commented, 2, 0, ""},
		{"trailing whitespace", append(three, " \n\n\t\n"...), 3, 0, ""},
		{"CRLF line ends", bytes.ReplaceAll(three, []byte("\n"), []byte("\r\n")), 3, 0, ""},
		{"cut inside the first block", cutInBlock(t, three, 0), 0, 1, "does not decode"},
		{"cut inside the last block", cutLast, 0, lineOf(three, 0, "-----END") + 1, "does not decode"},
		{"cut inside a middle block, a good one after", cutMiddle, 0, lineOf(three, secondBegin, "-----BEGIN"), "does not decode"},
		{"base64 after the last block", append(append([]byte(nil), three...), "MIIBkTCCATegAwIBAgIQ\n"...), 0, bytes.Count(three, []byte("\n")) + 1, "after the last PEM block"},
		{"garbage after the last block", append(append([]byte(nil), three...), "\n\nhello\n"...), 0, bytes.Count(three, []byte("\n")) + 3, "after the last PEM block"},
		{"END line cut", three[:len(three)-8], 0, lineOf(three, secondBegin+1, "-----BEGIN"), "does not decode"},
		{"stray END line", append(append([]byte(nil), a.CertPEM()...), append([]byte("-----END CERTIFICATE-----\n"), b.CertPEM()...)...), 0, lineOf(a.CertPEM(), 0, "-----END") + 1, "END line"},
		{"key block skipped", append(leaf.KeyPEM(), root.CertPEM()...), 1, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := ParsePEMCertificates(tc.data)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(certs) != tc.want {
					t.Fatalf("%d certificates, want %d", len(certs), tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted as %d certificates (%s)", len(certs), cn(certs))
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want one containing %q", err, tc.wantErr)
			}
			line := "line " + itoa(tc.wantLine) + ":"
			if !strings.Contains(err.Error(), line) {
				t.Fatalf("error %q does not name %q", err, line)
			}
		})
	}
}

func itoa(n int) string {
	var b []byte
	for ; n > 0 || len(b) == 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestStrictPEMIdentity: a keystore pem whose chain or key file is cut is
// refused, naming the file (certificate or key) and the line; a whole
// pair reads with its chain.
func TestStrictPEMIdentity(t *testing.T) {
	root := testpki.NewCA(t, "root")
	inter := root.NewIntermediate(t, "inter")
	leaf := inter.Issue(t, testpki.CN("me"))
	other := root.Issue(t, testpki.CN("other"))
	chain := leaf.CertPEM() // the leaf, then the intermediate

	id, err := ReadPEMKeyPair(chain, leaf.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	if id.Leaf.Subject.CommonName != "me" || len(id.Certificate) != 2 {
		t.Fatalf("leaf %q with %d certificates", id.Leaf.Subject.CommonName, len(id.Certificate))
	}
	for _, tc := range []struct {
		name      string
		cert, key []byte
		wantErr   string
		wantFile  string
	}{
		{"chain cut inside the intermediate", cutInBlock(t, chain, 1), leaf.KeyPEM(), "does not decode", "certificate file: line "},
		{"key file cut", leaf.CertPEM(), cutInBlock(t, leaf.KeyPEM(), 0), "does not decode", "key file: line 1:"},
		{"garbage after the key", chain, append(leaf.KeyPEM(), "xx"...), "after the last PEM block", "key file: line "},
		{"key of another certificate", chain, other.KeyPEM(), "does not match", ""},
		{"certificate and key swapped", leaf.KeyPEM(), chain, "", "certificate file"},
		{"no key", chain, nil, "no private-key PEM block", "key file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadPEMKeyPair(tc.cert, tc.key)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.wantFile) {
				t.Fatalf("error %q, want one containing %q and %q", err, tc.wantErr, tc.wantFile)
			}
		})
	}
}

// TestStrictCRLs: a CRL file cut inside its last block is refused, as a
// certificate bundle is.
func TestStrictCRLs(t *testing.T) {
	root := testpki.NewCA(t, "root")
	next := time.Now().Add(time.Hour)
	crl := revocationtest.PEM(revocationtest.CRL(t, root, next))
	two := revocationtest.PEM(revocationtest.CRL(t, root, next), revocationtest.CRL(t, root, next))
	if lists, err := ParseCRLs(two); err != nil || len(lists) != 2 {
		t.Fatalf("two CRLs: %d, %v", len(lists), err)
	}
	for name, data := range map[string][]byte{
		"cut inside the last block": cutInBlock(t, two, 1),
		"garbage after":             append(append([]byte(nil), crl...), "junk"...),
	} {
		if _, err := ParseCRLs(data); err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: error %v, want one naming the line", name, err)
		}
	}
}

// FuzzDecodePEM: whatever DecodePEM accepts holds no BEGIN or END line
// that is not one of its blocks, and nothing after its last block.
func FuzzDecodePEM(f *testing.F) {
	a, b := testpki.NewCA(f, "a"), testpki.NewCA(f, "b")
	two := append(a.CertPEM(), b.CertPEM()...)
	f.Add(two)
	f.Add(two[:len(two)-40])
	f.Add(append([]byte("subject=CN = a\n"), two...))
	f.Add(append(append([]byte(nil), two...), "tail"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		blocks, err := DecodePEM(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error %q names no line", err)
			}
			return
		}
		if n := bytes.Count(data, []byte("-----END")); n != len(blocks) {
			t.Fatalf("accepted %d blocks, but the data has %d END lines", len(blocks), n)
		}
		if n := bytes.Count(data, []byte("-----BEGIN")); n != len(blocks) {
			t.Fatalf("accepted %d blocks, but the data has %d BEGIN lines", len(blocks), n)
		}
	})
}
