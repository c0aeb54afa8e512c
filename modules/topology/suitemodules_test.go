package topology_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/trustline/trustline/modules/topology"
)

// suiteNamespaces are the namespaces whose modules the report reads, with
// the key that names the module in its config ("" for a matcher, named by
// its key in the matcher set; "app" for an app, by its key in apps).
var suiteNamespaces = map[string]string{
	"tls.ca_pool.source":           "provider",
	"trustline.keystore":           "source",
	"tls.client_auth.verifier":     "verifier",
	"tls.get_certificate":          "via",
	"http.handlers":                "handler",
	"http.reverse_proxy.transport": "protocol",
	"layer4.handlers":              "handler",
	"http.matchers":                "",
	"layer4.matchers":              "",
	"":                             "app",
}

// notRead are the suite's modules that carry no TLS leg of their own, so
// the report does not read them.
var notRead = map[string]string{
	"trustline_cluster":                    "the cluster's CA coordination (apps.trustline_cluster)",
	"admin.api.trustline_cluster":          "admin API",
	"admin.api.trustline_topology":         "admin API (this report)",
	"admin.api.trustline_explain":          "admin API (explain)",
	"caddy.storage.redis":                  "storage, outside apps",
	"tls.ca_pool.source.testpki_swappable": "a test's (internal/testpki)",
}

// TestSuiteModulesRead: the report reads each of the suite's modules
// through its Go type (suite.go's suiteModule: the module's config decoded
// into its struct, strictly, as Caddy decodes it), from the JSON the
// golden Caddyfiles of caddyfile/testdata adapt to. In every one of them
// no suite module is listed as not analysed, every config path the report
// gives resolves in the config, and every suite module of a namespace the
// report reads occurs in at least one. So a field renamed in a module's
// JSON fails here: the golden JSON no longer decodes into the module's
// type, or a path the report builds names a field that is not there;
// a field renamed in Go fails to compile.
func TestSuiteModulesRead(t *testing.T) {
	files, _ := filepath.Glob("../../caddyfile/testdata/*/*.caddyfiletest")
	if len(files) == 0 {
		t.Fatal("no golden Caddyfile")
	}
	seen := map[string]bool{}
	n := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, out, ok := bytes.Cut(data, []byte("\n----------\n"))
		if out = bytes.TrimSpace(out); !ok || !bytes.HasPrefix(out, []byte("{")) {
			continue // an error case
		}
		n++
		var root any
		if err := json.Unmarshal(out, &root); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		occurrences(root, "", seen)
		rep, err := topology.Analyze(out, topology.Options{NoFiles: true})
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, na := range rep.NotAnalysed {
			if suiteModule(na.Module) || strings.HasPrefix(na.Reason, "config does not decode") {
				t.Errorf("%s: %s (%s) not analysed: %s", file, na.Module, na.Path, na.Reason)
			}
		}
		for _, p := range reportPaths(rep) {
			if !resolves(root, p) {
				t.Errorf("%s: the report's path %s is not in the config", file, p)
			}
		}
	}
	t.Logf("%d golden configs read", n)

	var checked []string
	for _, id := range caddy.Modules() {
		if !suiteModule(id) || notRead[id] != "" {
			continue
		}
		checked = append(checked, id)
		ns, name := "", id
		if i := strings.LastIndexByte(id, '.'); i >= 0 {
			ns, name = id[:i], id[i+1:]
		}
		key, read := suiteNamespaces[ns]
		if !read {
			t.Errorf("suite module %s: in a namespace the report does not read; read it, or add it to notRead", id)
			continue
		}
		if !seen[key+"="+name] {
			t.Errorf("suite module %s: no golden Caddyfile in caddyfile/testdata configures it, so nothing checks the report reads it", id)
		}
	}
	t.Logf("suite modules read: %s", strings.Join(checked, " "))
}

// suiteModule reports whether the module id is one of the suite's.
func suiteModule(id string) bool {
	info, err := caddy.GetModule(id)
	if err != nil {
		return false
	}
	t := reflect.TypeOf(info.New())
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return strings.HasPrefix(t.PkgPath(), "github.com/trustline/trustline/")
}

// occurrences records the modules a config names: "provider=truststore"
// for an object with that key, "=peer" for a matcher set's key, "app=x"
// for an app.
func occurrences(v any, parent string, seen map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok {
				seen[k+"="+s] = true
			}
			switch parent {
			case "apps":
				seen["app="+k] = true
			case "match":
				seen["="+k] = true
			}
			occurrences(e, k, seen)
		}
	case []any:
		for _, e := range x {
			occurrences(e, parent, seen)
		}
	}
}

// reportPaths lists the config paths a report gives.
func reportPaths(rep *topology.Report) []string {
	var out []string
	pools := func(ps ...*topology.Pool) {
		for _, p := range ps {
			if p != nil {
				out = append(out, p.Path)
			}
		}
	}
	for _, l := range rep.Listeners {
		out = append(out, l.Path)
		for _, r := range l.Routes {
			out = append(out, r.Path)
			if ca := r.Inbound.ClientAuth; ca != nil {
				out = append(out, ca.Path)
				pools(ca.Pools...)
				for _, c := range ca.CRLs {
					out = append(out, c.Path)
				}
			}
			for _, o := range r.Outbound {
				out = append(out, o.Path)
				pools(o.TrustPool)
			}
		}
	}
	for _, c := range rep.Certificates {
		out = append(out, c.UsedBy...)
	}
	for _, f := range rep.Findings {
		out = append(out, f.Path)
	}
	for _, na := range rep.NotAnalysed {
		out = append(out, na.Path)
	}
	return out
}

// resolves reports whether the config path ("apps.http.servers.srv0.
// routes[0].handle[1]") leads somewhere in the config.
func resolves(root any, path string) bool {
	cur := root
	for _, part := range strings.Split(path, ".") {
		key, rest, _ := strings.Cut(part, "[")
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[key]; !ok {
			return false
		}
		for rest != "" {
			n, after, _ := strings.Cut(rest, "]")
			i, err := strconv.Atoi(n)
			a, ok := cur.([]any)
			if err != nil || !ok || i < 0 || i >= len(a) {
				return false
			}
			cur, rest = a[i], strings.TrimPrefix(after, "[")
		}
	}
	return true
}

// TestSuiteModuleUndecodable: a suite module whose config Caddy would not
// load (a field of the wrong type, an unknown field) is listed as not
// analysed, with the decoding error, and the rest of the config is still
// analysed.
func TestSuiteModuleUndecodable(t *testing.T) {
	cfg := `{"apps":{"http":{"servers":{"s":{"listen":[":8443"],"tls_connection_policies":[{"client_authentication":{
		"verifiers":[{"verifier":"peer","dns":"not a list"},{"verifier":"live_trust","trust_pool":{"provider":"bundle","paths":["/x.pem"],"colour":"blue"}}]}}],
		"routes":[{"match":[{"peer":{"spiffe_id":[1]}}],"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.1:443"}],
		"transport":{"protocol":"mtls","client_identity":{"source":"pem","certificate":7}}}]}]}}}}}`
	rep, err := topology.Analyze([]byte(cfg), topology.Options{NoFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"tls.client_auth.verifier.peer": `json: cannot unmarshal string into Go struct field`,
		"tls.ca_pool.source.bundle":     `json: unknown field "colour"`,
		"http.matchers.peer":            `json: cannot unmarshal number into Go struct field`,
		"trustline.keystore.pem":        `json: cannot unmarshal number into Go struct field`,
	}
	for _, na := range rep.NotAnalysed {
		if w, ok := want[na.Module]; ok && strings.HasPrefix(na.Reason, "config does not decode: ") && strings.Contains(na.Reason, w) {
			delete(want, na.Module)
		}
	}
	for id, w := range want {
		t.Errorf("%s: no not-analysed entry with %q in %+v", id, w, rep.NotAnalysed)
	}
	if len(rep.Listeners) != 1 || len(rep.Listeners[0].Routes) != 1 || len(rep.Listeners[0].Routes[0].Outbound) != 1 {
		t.Errorf("the rest of the config is not analysed: %+v", rep.Listeners)
	}
}
