package integration

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/trustline/trustline/integration/bench"
	"github.com/trustline/trustline/modules/topology"
)

// TestExampleHybridProxy: examples/hybrid-proxy. The four cases of the
// hybrid reverse proxy, one Caddy site each, in front of nginx: TLS to
// plain HTTP, TLS to TLS, mTLS to mTLS (the origin sees the proxy's client
// certificate), mTLS to TLS (it sees none); the report says where each
// leg is encrypted and which certificates expire when, and so do the
// not-after gauges.
func TestExampleHybridProxy(t *testing.T) {
	bench.Need(t, "nginx")
	var cases [5]string // cases[n]: the port of case n
	env := []string{}
	for n := 1; n <= 4; n++ {
		cases[n] = bench.Port(bench.FreeAddr(t))
		env = append(env, "CASE"+strconv.Itoa(n)+"_PORT="+cases[n])
	}
	originHTTP, originTLS, originMTLS, admin := bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t), bench.FreeAddr(t)
	env = append(env, "ORIGIN_HTTP_PORT="+bench.Port(originHTTP), "ORIGIN_TLS_PORT="+bench.Port(originTLS),
		"ORIGIN_MTLS_PORT="+bench.Port(originMTLS), "TL_ADMIN="+admin)
	ex := runExample(t, "hybrid-proxy", env...)

	// url is the curl arguments for case n, with the client's certificate
	// (client = "" for none)
	url := func(n int, client string) []string {
		host := "case" + strconv.Itoa(n) + ".example.test:" + cases[n]
		args := []string{"--cacert", ex.file("public-ca.crt"), "--resolve", host + ":127.0.0.1", "https://" + host + "/"}
		if client != "" {
			args = append([]string{"--cert", ex.file(client + ".crt"), "--key", ex.file(client + ".key")}, args...)
		}
		return args
	}
	for _, c := range []struct {
		n            int
		client, want string
	}{
		{1, "", "origin: plain HTTP, no TLS on this leg\n"},
		{2, "", "origin: TLS, proxy's client certificate: []\n"},
		{3, "partner", "origin: mTLS, proxy's client certificate: [CN=hybrid-proxy] (verify SUCCESS)\n"},
		// the origin asks for a certificate on this listener: the proxy
		// has none to give in case 4
		{4, "employee", "origin: TLS, proxy's client certificate: []\n"},
	} {
		if got := curlOK(t, url(c.n, c.client)...); got != c.want {
			t.Errorf("case %d: %q, want %q", c.n, got, c.want)
		}
	}
	// inbound mTLS: no certificate, or one from the other case's CA, is
	// refused in the handshake
	curlRefused(t, url(3, "")...)
	curlRefused(t, url(4, "")...)
	curlRefused(t, url(3, "employee")...)
	curlRefused(t, url(4, "partner")...)
	// the origin's mTLS listener lets nobody in without a certificate: in
	// case 3 the proxy's identity is what gets through
	curlRefused(t, "--cacert", ex.file("enterprise-ca.crt"), "--resolve", "origin.internal:"+bench.Port(originMTLS)+":127.0.0.1",
		"https://origin.internal:"+bench.Port(originMTLS)+"/")

	rep := ex.report(t, admin, "Caddyfile")
	byPort := map[string]*topology.Listener{}
	for _, l := range rep.Listeners {
		byPort[bench.Port(l.Address)] = l
	}
	route := func(n int) *topology.Route {
		t.Helper()
		l := byPort[cases[n]]
		if l == nil || l.Inbound != "https" || len(l.Routes) != 1 {
			t.Fatalf("case %d: listener %+v", n, l)
		}
		r := l.Routes[0]
		if len(r.Outbound) != 1 {
			t.Fatalf("case %d: outbound %+v", n, r.Outbound)
		}
		// inbound: Caddy terminates with the case's own server certificate
		if c := certOf(rep, r.Inbound.Certificates); c == nil || c.Role != topology.RoleServer ||
			c.Subject != "CN=case"+strconv.Itoa(n)+".example.test" || c.NotAfter == nil {
			t.Errorf("case %d: server certificate %+v", n, c)
		}
		return r
	}
	anchor := func(p *topology.Pool) string {
		if p == nil || len(p.Anchors) != 1 {
			return ""
		}
		if c := rep.Certificate(p.Anchors[0]); c != nil {
			return c.Subject
		}
		return ""
	}
	r1, r2, r3, r4 := route(1), route(2), route(3), route(4)
	if r1.Inbound.Mode != topology.ModeTLS || r1.Outbound[0].Mode != topology.OutPlainHTTP {
		t.Errorf("case 1: in %s, out %s; want tls, http", r1.Inbound.Mode, r1.Outbound[0].Mode)
	}
	if o := r2.Outbound[0]; r2.Inbound.Mode != topology.ModeTLS || o.Mode != topology.OutTLS ||
		anchor(o.TrustPool) != "CN=Example Enterprise CA" || o.ServerName != "origin.internal" || len(o.ClientCertificates) != 0 {
		t.Errorf("case 2: in %s, out %+v", r2.Inbound.Mode, o)
	}
	if in, o := r3.Inbound, r3.Outbound[0]; in.Mode != topology.ModeMTLS || in.ClientAuth == nil || len(in.ClientAuth.Pools) != 1 ||
		anchor(in.ClientAuth.Pools[0]) != "CN=Example Client CA" ||
		o.Mode != topology.OutMTLS || anchor(o.TrustPool) != "CN=Example Enterprise CA" {
		t.Errorf("case 3: in %+v, out %+v", in, o)
	} else if c := certOf(rep, o.ClientCertificates); c == nil || c.Role != topology.RoleClient || c.Subject != "CN=hybrid-proxy" || c.NotAfter == nil {
		t.Errorf("case 3: the proxy's client certificate %+v", c)
	}
	if in, o := r4.Inbound, r4.Outbound[0]; in.Mode != topology.ModeMTLS || in.ClientAuth == nil || len(in.ClientAuth.Pools) != 1 ||
		anchor(in.ClientAuth.Pools[0]) != "CN=Example Enterprise CA" ||
		o.Mode != topology.OutTLS || anchor(o.TrustPool) != "CN=Example Enterprise CA" || len(o.ClientCertificates) != 0 {
		t.Errorf("case 4: in %+v, out %+v", in, o)
	}
	// findings: the plaintext leg of case 1 (info: the origin is on this
	// host), nothing on cases 2 to 4
	case1 := byPort[cases[1]].Path
	if !hasFinding(rep, topology.KindPlaintextLeg, topology.SeverityInfo, case1) {
		t.Errorf("case 1: the plaintext leg is not flagged: %+v", rep.Findings)
	}
	for _, f := range rep.Findings {
		if !strings.HasPrefix(f.Path, case1+".") {
			t.Errorf("unexpected finding outside case 1: %+v", f)
		}
	}
	if code := ex.failOn(t, "Caddyfile", "warning"); code != 0 {
		t.Errorf("--fail-on warning: exit %d, want 0 (%+v)", code, rep.Findings)
	}
	// with the origin on another host (a private network), the same
	// case 1 is a warning, and fails --fail-on warning
	remote := filepath.Join(t.TempDir(), "Caddyfile")
	src, err := os.ReadFile(bench.RepoPath("examples", "hybrid-proxy", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(src), "reverse_proxy 127.0.0.1:{$ORIGIN_HTTP_PORT", "reverse_proxy 10.0.0.5:{$ORIGIN_HTTP_PORT", 1)
	if moved == string(src) {
		t.Fatal("the example's Caddyfile no longer proxies case 1 to 127.0.0.1:{$ORIGIN_HTTP_PORT}")
	}
	if err := os.WriteFile(remote, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := ex.caddy(t, "trustline", "topology", "--config", remote, "--adapter", "caddyfile", "--format", "json", "--fail-on", "warning")
	remoteRep := topologyJSON(t, out)
	remoteCase1 := ""
	for _, l := range remoteRep.Listeners {
		if bench.Port(l.Address) == cases[1] {
			remoteCase1 = l.Path
		}
	}
	if code != 2 || remoteCase1 == "" || !hasFinding(remoteRep, topology.KindPlaintextLeg, topology.SeverityWarning, remoteCase1+".") {
		t.Errorf("origin of case 1 on 10.0.0.5: exit %d, findings %+v; want a plaintext_leg warning and exit 2", code, remoteRep.Findings)
	}

	// the expiries an operator alerts on: each server certificate
	// (inbound) and the proxy's client certificate (outbound), with the
	// not-after of the files run.sh made
	metrics := curlOK(t, "http://"+admin+"/metrics")
	for n := 1; n <= 4; n++ {
		name := "case" + strconv.Itoa(n)
		got := gaugeValue(t, metrics, "trustline_certificate_not_after_timestamp_seconds",
			`role="server"`, `source="file `+ex.file(name+".crt")+`"`, `subject="CN=`+name+`.example.test"`)
		if want := notAfterOf(t, ex.file(name+".crt")); got != want {
			t.Errorf("%s: server certificate gauge %v, want %v", name, got, want)
		}
	}
	got := gaugeValue(t, metrics, "trustline_material_not_after_timestamp_seconds", `kind="keystore"`, `source="`+ex.file("proxy-client.crt")+`"`)
	if want := notAfterOf(t, ex.file("proxy-client.crt")); got != want {
		t.Errorf("client certificate gauge %v, want %v", got, want)
	}
	// the CAs, which the hybrid proxy document leaves to the operator
	for _, ca := range []string{"enterprise-ca", "client-ca"} {
		got := gaugeValue(t, metrics, "trustline_material_not_after_timestamp_seconds", `kind="bundle"`, `source="`+ex.file(ca+".crt")+`"`)
		if want := notAfterOf(t, ex.file(ca+".crt")); got != want {
			t.Errorf("%s gauge %v, want %v", ca, got, want)
		}
	}
}

// certOf is the report's certificate of the only ID in ids.
func certOf(rep *topology.Report, ids []string) *topology.Certificate {
	if len(ids) != 1 {
		return nil
	}
	return rep.Certificate(ids[0])
}

// gaugeValue is the value of the one sample of metric whose labels
// contain every one of labels.
func gaugeValue(t *testing.T, metrics, metric string, labels ...string) int64 {
	t.Helper()
	var found []string
next:
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		found = append(found, line)
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples, want 1:\n%s", metric, labels, len(found), grepLines(metrics, "not_after"))
	}
	f := strings.Fields(found[0])
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		t.Fatalf("%s: %v", found[0], err)
	}
	return int64(v)
}

// notAfterOf is the not-after (Unix seconds) of the PEM certificate in path.
func notAfterOf(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c.NotAfter.Unix()
}
