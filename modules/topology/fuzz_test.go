package topology

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trustline/trustline/modules/material"
)

// FuzzAnalyze: no JSON config makes the analysis, the table, the JSON
// encoding or the picture panic, and the picture is well-formed XML
// whatever text the config holds. Files are read as configs name them
// (only regular files, bounded in size).
//
// Each input is analysed and drawn four ways (about 1 ms), and the fuzzer
// minimizes every new interesting input for up to -fuzzminimizetime
// (default 60s) before it reports progress again: on two cores the
// progress lines then read "0/sec" for up to a minute at a time, which is
// minimization, not a hang (no input takes over 2 s). For a quick run:
//
//	go test -run XXX -fuzz FuzzAnalyze -fuzztime 60s -fuzzminimizetime 2s ./modules/topology
func FuzzAnalyze(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/golden/*.json")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		`null`, `[]`, `{}`, `{"apps":null}`, `{"apps":{"http":{"servers":{"a":null}}}}`,
		`{"apps":{"http":{"http_port":1e300,"servers":{"a":{"listen":[":80",":443"],"routes":[{"match":[{"host":["x"]}],"handle":[{"handler":"subroute","routes":[{"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"x:1"}],"transport":{"protocol":"http","tls":{"insecure_skip_verify":true,"ca":{"provider":"combined","sources":[{"provider":"lazy","backend":{"provider":"file","pem_files":["/dev/zero"]}}]}}},"headers":{"request":{"add":{"X-SSL-Client-DN":["x"]},"delete":["*"]}}}]}]}]}]}}}}}`,
		`{"apps":{"layer4":{"servers":{"x":{"listen":[":1"],"routes":[{"match":[{"tls":{"sni":["a"]}}],"handle":[{"handler":"tls"},{"handler":"proxy","upstreams":[{"dial":["b:1"],"tls":{}}]}]}]}}}}}`,
		`{"apps":{"tls":{"certificates":{"load_files":[{"certificate":"{file./dev/zero}"}],"load_pem":[{"certificate":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----"}],"automate":["a"]},"automation":{"policies":[{"get_certificate":[{"via":"keystore","keystore":{"source":"pkcs12","path":"/dev/null","password":"{file./dev/zero}"}}]}]}}}}`,
		`{"apps":{"http":{"servers":{"a":{"listen":[":8443"],"tls_connection_policies":[{"client_authentication":{"trusted_ca_certs":["!!"],"verifiers":[{"verifier":"live_trust","trust_pool":{"provider":"spiffe_bundle","bundles":[{"trust_domain":"bad td","file":"/etc/hostname"}]}},{"verifier":"leaf","leaf_certs_loaders":[{"loader":"file","files":["/etc/hostname"]}]}]}}]}}}}}`,
		`{"apps":{"passthrough":{"servers":{"p":{"listen":["127.0.0.1:9443"],"routes":[{"match":[{"clienthello":{"sni":["a.test"],"served_by_caddy":false}}],"handle":[{"handler":"passthrough","upstreams":[{"dial":"10.0.0.5:443"}],"proxy_protocol":"v2"}]},{"match":[{"clienthello":{}}],"handle":[{"handler":"refuse","alert":"unrecognized_name"}]}]}}},"http":{"servers":{"s":{"listen":[":443"],"listener_wrappers":[{"wrapper":"layer4","routes":[{"match":[{"clienthello":{"sni":["b.test"]}}],"handle":[{"handler":"passthrough","upstreams":[{"dial":"x:1"}]}]}]},{"wrapper":"proxy_protocol","allow":["127.0.0.1/32"]},{"wrapper":"tls"}],"routes":[{"match":[{"host":["c.test"],"peer":{"spiffe_id":["spiffe://td/x"]}}],"handle":[{"handler":"subroute","routes":[{"group":"g","handle":[{"handler":"peer_headers","client_cert":true,"xfcc":{},"pem_header":"X-SSL-Client-Cert","headers":{"X-Client-DN":"{peer.subject}"},"strip":["X-SSL-Client-Verify"]},{"handler":"peer_authorize","spiffe_id":["spiffe://td/**"]},{"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.1:80"}],"transport":{"protocol":"mtls","client_identity":{"source":"jks","path":"/nope.jks","password":"x","alias":"a"},"upstream_identity":["spiffe://td/b"]}}]}]}],"terminal":true}]}}}}}`,
		// suite modules whose config does not decode
		`{"apps":{"passthrough":{"servers":{"p":{"listen":[":1"],"routes":[{"match":[{"clienthello":5,"peer":{"dns":3}}],"handle":[{"handler":"passthrough","upstreams":[null],"tls":{"client_identity":{"source":"pem","certificate":7}}},{"handler":"terminate_tls","connection_policies":[null,{"client_authentication":{"verifiers":[{"verifier":"peer","revocation":{"ocsp":null,"crl_files":"x"}}]}}]},{"handler":"refuse","alert":[]}]}]}}},"tls":{"automation":{"policies":[{"get_certificate":[{"via":"keystore","keystore":null}]}]}}}}`,
	} {
		f.Add([]byte(s))
	}
	// text the picture must escape or drop: markup, control characters
	f.Add([]byte(`{"apps":{"http":{"servers":{"a<b>&\"'":{"listen":[":443\u0001"],"routes":[{"match":[{"host":["h\u0000\u001b<x>é€"]}],"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"\ufffe:1"}]}]}]}}}}}`))
	f.Fuzz(func(t *testing.T, cfg []byte) {
		rep, err := Analyze(cfg, Options{})
		if err != nil {
			return
		}
		if err := rep.WriteTable(io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(rep); err != nil {
			t.Fatal(err)
		}
		_ = gauges(rep)
		var svg bytes.Buffer
		if err := rep.WriteSVG(&svg, SVGOptions{}); err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(&svg)
		for {
			if _, err := dec.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("the picture is not well-formed XML: %v", err)
			}
		}
		if err := rep.WriteHTML(io.Discard, HTMLOptions{Refresh: 5}); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzCRLs: no CRL file makes material.ParseCRLs (the peer verifier's parser) panic; what it accepts has an
// issuer, and describing it as the table and the picture do does not
// panic either.
func FuzzCRLs(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Fuzz CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(4e9, 0), SubjectKeyId: []byte{1, 2, 3, 4}}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(5), ThisUpdate: time.Unix(1e9, 0), NextUpdate: time.Unix(2e9, 0),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(77), RevocationTime: time.Unix(1e9, 0)}}}, ca, key)
	if err != nil {
		f.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	f.Add(der)
	f.Add(p)
	f.Add(append(append([]byte{}, p...), p...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		lists, err := material.ParseCRLs(data)
		if err != nil {
			return
		}
		for _, l := range lists {
			c := &CRL{File: "f", Issuer: l.Issuer.String(), Revoked: len(l.RevokedCertificateEntries)}
			if !l.NextUpdate.IsZero() {
				n := l.NextUpdate.UTC()
				c.NextUpdate = &n
			}
			_ = c.describe()
		}
	})
}
