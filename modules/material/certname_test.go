package material

import (
	"crypto/x509"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

func TestSerialString(t *testing.T) {
	for n, want := range map[int64]string{1: "1", 255: "ff", 0x1a2b3c: "1a2b3c"} {
		if got := SerialString(&x509.Certificate{SerialNumber: big.NewInt(n)}); got != want {
			t.Errorf("SerialString(%d) = %q, want %q", n, got, want)
		}
	}
	if got := SerialString(&x509.Certificate{}); got != "" {
		t.Errorf("no serial: %q", got)
	}
	if got := SerialString(nil); got != "" {
		t.Errorf("nil certificate: %q", got)
	}
}

// TestTimeField: a time in a log reads as RFC 3339 (UTC) under every
// encoder, never epoch seconds.
func TestTimeField(t *testing.T) {
	at := time.Date(2021, 1, 1, 0, 0, 0, 0, time.FixedZone("X", 3600))
	enc := zapcore.NewMapObjectEncoder()
	TimeField("not_after", at).AddTo(enc)
	if got := enc.Fields["not_after"]; got != "2020-12-31T23:00:00Z" {
		t.Errorf("TimeField: %v", got)
	}
	if got := TimeString(at); got != "2020-12-31T23:00:00Z" {
		t.Errorf("TimeString: %q", got)
	}
}

// printsSerialOrTime finds the ways of printing a serial number or a time
// in a log that are not the one way (SerialString, TimeField).
var printsSerialOrTime = regexp.MustCompile(`SerialNumber\.(Text|String)\(|zap\.Time\(|(Errorf|Sprintf|zap\.\w+)\(.*\bSerialNumber([^.\w]|$)`)

// TestOneWayToPrint: every error and log of the suite prints a
// certificate's serial with SerialString and a time with TimeField (or
// TimeString), so that one log filter or grep finds a certificate
// everywhere (issue 22).
func TestOneWayToPrint(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, dir := range []string{"modules", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, "certname.go") {
				return err
			}
			// test helpers keying their own tables
			if strings.Contains(path, "revocationtest") || strings.Contains(path, "testpki") {
				return nil
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for i, line := range strings.Split(string(raw), "\n") {
				if printsSerialOrTime.MatchString(line) && !strings.Contains(line, "FormatSerial(") {
					t.Errorf("%s:%d: print serials with material.SerialString and log times with material.TimeField: %s", path, i+1, strings.TrimSpace(line))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
