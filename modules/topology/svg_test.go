package topology_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/trustline/trustline/internal/testpki"
	"github.com/trustline/trustline/modules/topology"
)

// exampleFixtures writes into dir the certificates an example's run.sh
// makes with openssl (the same file names and subjects), valid from a day
// before goldenNow: CAs for a year, leaves for 90 days, as run.sh makes
// them.
func exampleFixtures(t *testing.T, example, dir string) {
	t.Helper()
	cas := map[string]*testpki.CA{}
	ca := func(file, cn string) {
		cas[file] = testpki.NewCA(t, cn, testpki.Validity(day(-1), day(364)))
		testpki.WriteFile(t, dir, file+".crt", cas[file].CertPEM())
	}
	leaf := func(file, cn, issuer string, opts ...testpki.Option) {
		opts = append([]testpki.Option{testpki.CN(cn), testpki.Validity(day(-1), day(89))}, opts...)
		cas[issuer].Issue(t, opts...).WriteFiles(t, dir, file)
	}
	switch example {
	case "lb-passthrough":
		ca("ca", "Example Public CA")
		leaf("caddy", "localhost", "ca", testpki.DNS("localhost"), testpki.ServerOnly())
	case "lb-reencrypt":
		ca("internal-ca", "Example Internal CA")
		leaf("caddy", "caddy.internal", "internal-ca", testpki.DNS("caddy.internal"), testpki.ServerOnly())
	case "ingress-internal-ca":
		ca("public-ca", "Example Public CA")
		leaf("api", "api.example.test", "public-ca", testpki.DNS("api.example.test"), testpki.ServerOnly())
		ca("internal-ca", "Example Internal CA")
		leaf("backend", "backend.internal", "internal-ca", testpki.DNS("backend.internal"), testpki.ServerOnly())
		leaf("node1", "node1.internal", "internal-ca", testpki.DNS("node1.internal"))
	case "hybrid-proxy":
		ca("public-ca", "Example Public CA")
		for _, n := range []string{"1", "2", "3", "4"} {
			leaf("case"+n, "case"+n+".example.test", "public-ca", testpki.DNS("case"+n+".example.test"), testpki.ServerOnly())
		}
		ca("enterprise-ca", "Example Enterprise CA")
		leaf("proxy-client", "hybrid-proxy", "enterprise-ca", testpki.ClientOnly())
		ca("client-ca", "Example Client CA")
	case "l4-mtls":
		ca("mesh", "Example Mesh CA")
		leaf("db", "db.example.test", "mesh", testpki.DNS("db.example.test"), testpki.ServerOnly())
		client := cas["mesh"].Issue(t, testpki.CN("caddy-proxy"), testpki.ClientOnly(), testpki.Validity(day(-1), day(89)))
		testpki.WriteFile(t, dir, "caddy-client.p12", testpki.PKCS12Keystore(t, client, "example-pass", false))
		t.Setenv("CLIENT_P12_PASSWORD", "example-pass")
	case "spire":
		for k, v := range map[string]string{"ADMIN": "localhost:2019", "NODE": "a", "OTHER": "b", "PEER_PORT": "7443", "OTHER_PORT": "7444",
			"API_PORT": "7001", "SPIFFE_ENDPOINT_SOCKET": "unix:///run/spire/agent.sock"} {
			t.Setenv(k, v)
		}
	case "cluster":
		for k, v := range map[string]string{"ADMIN": "localhost:2019", "NODE": "a", "NODE_IP": "127.0.0.1", "SPIFFE_ID": "spiffe://cluster.local/node/a",
			"API_PORT": "7001", "PEER_PORT": "7443", "REDIS": "127.0.0.1:6379", "STORAGE_KEY": filepath.Join(dir, "storage.key")} {
			t.Setenv(k, v)
		}
	}
}

// seedExamples are the examples drawn as golden SVGs: the seed
// topologies, and the layer-4 mTLS example.
var seedExamples = []struct{ name, example, file string }{
	{"lb-termination", "lb-termination", "Caddyfile"},
	{"lb-passthrough", "lb-passthrough", "Caddyfile"},
	{"lb-reencrypt", "lb-reencrypt", "Caddyfile"},
	{"ingress-internal-ca-edge", "ingress-internal-ca", "Caddyfile.edge"},
	{"ingress-internal-ca-single", "ingress-internal-ca", "Caddyfile.single"},
	{"hybrid-proxy", "hybrid-proxy", "Caddyfile"},
	{"reencrypt", "reencrypt", "Caddyfile"},
	{"cluster", "cluster", "Caddyfile"},
	{"l4-mtls", "l4-mtls", "Caddyfile"},
	{"spire", "spire", "Caddyfile"},
}

// exampleReport analyses an example's Caddyfile with its fixtures in a
// temp dir, which the report then names $EX_DIR.
func exampleReport(t *testing.T, example, file string) *topology.Report {
	t.Helper()
	dir := t.TempDir()
	exampleFixtures(t, example, dir)
	t.Setenv("EX_DIR", dir)
	cfg := adaptFile(t, filepath.Join("..", "..", "examples", example, file), dir)
	rep, err := topology.Analyze(cfg, topology.Options{Now: goldenNow})
	if err != nil {
		t.Fatal(err)
	}
	return normalise(t, rep, dir, "$EX_DIR")
}

// normalise replaces a temp dir in a report by a fixed name.
func normalise(t *testing.T, rep *topology.Report, dir, name string) *topology.Report {
	t.Helper()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var norm topology.Report
	if err := json.Unmarshal([]byte(strings.ReplaceAll(string(b), dir, name)), &norm); err != nil {
		t.Fatal(err)
	}
	return &norm
}

// checkGolden compares got with testdata/<file>; UPDATE_GOLDEN=1 rewrites it.
func checkGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	want, _ := os.ReadFile(file)
	if bytes.Equal(got, want) {
		return
	}
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s differs (UPDATE_GOLDEN=1 rewrites it; look at the picture before committing it)\n--- got\n%s", file, got)
}

// TestGoldenSVG draws each seed example and compares the SVG with
// testdata/svg/<name>.svg.
func TestGoldenSVG(t *testing.T) {
	for _, ex := range seedExamples {
		t.Run(ex.name, func(t *testing.T) {
			rep := exampleReport(t, ex.example, ex.file)
			var out bytes.Buffer
			if err := rep.WriteSVG(&out, topology.SVGOptions{Now: goldenNow}); err != nil {
				t.Fatal(err)
			}
			checkSVG(t, rep, out.Bytes())
			checkGolden(t, filepath.Join("testdata", "svg", ex.name+".svg"), out.Bytes())
		})
	}
	// the configs with findings of every kind and modules not analysed
	dir := t.TempDir()
	writeFixtures(t, dir)
	t.Setenv("TOPO_DIR", dir)
	for _, name := range []string{"unsafe.caddyfile", "unknown.json", "passthrough.caddyfile", "suite_peer.caddyfile"} {
		t.Run(name, func(t *testing.T) {
			rep, err := topology.Analyze(adaptFile(t, filepath.Join("testdata", "golden", name), dir), topology.Options{Now: goldenNow})
			if err != nil {
				t.Fatal(err)
			}
			rep = normalise(t, rep, dir, "$TOPO_DIR")
			var out bytes.Buffer
			if err := rep.WriteSVG(&out, topology.SVGOptions{Now: goldenNow}); err != nil {
				t.Fatal(err)
			}
			checkSVG(t, rep, out.Bytes())
			checkGolden(t, filepath.Join("testdata", "svg", strings.TrimSuffix(name, filepath.Ext(name))+".svg"), out.Bytes())
		})
	}
}

// checkSVG checks what the picture must hold whatever its layout: well
// formed XML; every leg of the report with its kind; every certificate
// drawn at a TLS end; every finding on an element and in the list; every
// module not analysed marked.
func checkSVG(t *testing.T, rep *topology.Report, svg []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	els := map[string]int{} // "attr=value" and "attr=value kind=..." seen
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			at := map[string]string{}
			for _, a := range se.Attr {
				at[a.Name.Local] = a.Value
			}
			for k, v := range at {
				els[k+"="+v]++
			}
			if leg, ok := at["data-leg"]; ok {
				els["leg "+at["data-direction"]+" "+leg+" "+at["data-kind"]]++
			}
			if f, ok := at["data-finding"]; ok {
				els["badge "+f+" "+at["data-finding-path"]]++
			}
		}
	}
	for _, l := range rep.Listeners {
		for _, rt := range l.Routes {
			if els["leg in "+rt.Path+" "+rt.Inbound.Mode] == 0 {
				t.Errorf("no inbound leg %s of kind %s", rt.Path, rt.Inbound.Mode)
			}
			for _, c := range rt.Inbound.Certificates {
				if els["data-cert="+c] == 0 {
					t.Errorf("certificate %s of %s not drawn", c, rt.Path)
				}
			}
			for _, o := range rt.Outbound {
				if els["leg out "+o.Path+" "+o.Mode] == 0 {
					t.Errorf("no outbound leg %s of kind %s", o.Path, o.Mode)
				}
			}
		}
	}
	for _, f := range rep.Findings {
		if els["data-finding-item="+f.Kind] == 0 {
			t.Errorf("finding %s not in the list", f.Kind)
		}
		if els["badge "+f.Kind+" "+f.Path] == 0 && len(rep.Listeners) > 0 {
			t.Errorf("finding %s at %s is on no element", f.Kind, f.Path)
		}
	}
	for _, n := range rep.NotAnalysed {
		if els["data-not-analysed-item="+n.Module] == 0 {
			t.Errorf("module %s not analysed is not listed", n.Module)
		}
	}
	for _, secret := range []string{"example-pass", "s3cret"} {
		if bytes.Contains(svg, []byte(secret)) {
			t.Errorf("the picture holds the secret %q", secret)
		}
	}
	if regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:`).Match(svg) {
		t.Error("the picture holds a timestamp: it would differ at every run")
	}
}
