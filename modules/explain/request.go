package explain

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/trustline/trustline/modules/material"
)

// Request is what to explain: one client, as the server would meet it.
// It is the body of POST /trustline/explain and what the command's flags
// build.
type Request struct {
	// ServerName is the name the client sends (SNI) and asks for (Host).
	// Required.
	ServerName string `json:"server_name"`
	// Listen picks the listener by its address (":8443",
	// "127.0.0.1:443"): the one whose listen address takes this one.
	// Default: the only listener, or the one that serves ServerName.
	Listen string `json:"listen,omitempty"`
	// Chain is the client's certificate chain as PEM: its certificate
	// first, then the intermediates it sends, as the client's certificate
	// file holds them. Never a private key. Empty: a client that sends
	// no certificate.
	Chain string `json:"chain,omitempty"`
	// Method and Path of the request. Default GET and /.
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	// ALPN lists the protocols the client offers. Default: h2, http/1.1
	// (what curl and browsers offer).
	ALPN []string `json:"alpn,omitempty"`
	// RemoteIP is the client's address, for matchers that read it.
	// Default 127.0.0.1.
	RemoteIP string `json:"remote_ip,omitempty"`
	// Upstream, when set, dials that backend now (an upstream address of
	// the config, or "route:<n>" for the upstreams of the route that
	// takes the request) with the configured client identity and trust,
	// and reports the handshake. Nothing else is explained then.
	Upstream string `json:"upstream,omitempty"`

	certs []*x509.Certificate
}

// The bounds of a request: what a client's certificate chain can be.
const (
	// MaxChainBytes bounds the PEM chain.
	MaxChainBytes = 64 << 10
	// MaxChainCerts bounds the certificates in it.
	MaxChainCerts = 10
	// MaxBodyBytes bounds the whole body of POST /trustline/explain: the
	// chain and a few short fields.
	MaxBodyBytes = MaxChainBytes + 8<<10
	maxField     = 1024
)

// ParseRequest reads a request from JSON, within the bounds above,
// certificates only (a private key is refused, never read), every field
// checked: the one parser of explain's input, for the admin API and the
// command alike.
func ParseRequest(body []byte) (*Request, error) {
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("request of %d bytes: at most %d", len(body), MaxBodyBytes)
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if dec.More() {
		return nil, errors.New("request: data after the JSON object")
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return &r, nil
}

// check validates the fields and parses the chain.
func (r *Request) check() error {
	r.ServerName = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(r.ServerName)), ".")
	if r.ServerName == "" && r.Upstream == "" {
		return errors.New("server_name is required: the name the client asks for (SNI and Host)")
	}
	if r.ServerName != "" && !printable(r.ServerName) || strings.ContainsAny(r.ServerName, " /:@") || len(r.ServerName) > 253 {
		return fmt.Errorf("server_name %q: not a host name", r.ServerName)
	}
	for name, v := range map[string]string{"listen": r.Listen, "method": r.Method, "path": r.Path, "remote_ip": r.RemoteIP, "upstream": r.Upstream} {
		if len(v) > maxField || !printable(v) {
			return fmt.Errorf("%s: at most %d printable characters", name, maxField)
		}
	}
	r.Method = cmp.Or(r.Method, "GET")
	for _, c := range r.Method {
		if c < 'A' || c > 'Z' {
			return fmt.Errorf("method %q: an HTTP method in capitals, such as GET", r.Method)
		}
	}
	r.Path = cmp.Or(r.Path, "/")
	if !strings.HasPrefix(r.Path, "/") {
		return fmt.Errorf("path %q: must start with /", r.Path)
	}
	r.RemoteIP = cmp.Or(r.RemoteIP, "127.0.0.1")
	if net.ParseIP(r.RemoteIP) == nil {
		return fmt.Errorf("remote_ip %q: not an IP address", r.RemoteIP)
	}
	if len(r.ALPN) > 8 {
		return errors.New("alpn: at most 8 protocols")
	}
	for _, p := range r.ALPN {
		if p == "" || len(p) > 255 || !printable(p) {
			return fmt.Errorf("alpn %q: 1 to 255 printable characters", p)
		}
	}
	if len(r.ALPN) == 0 {
		r.ALPN = []string{"h2", "http/1.1"}
	}
	certs, err := ParseChain([]byte(r.Chain))
	if err != nil {
		return err
	}
	r.certs = certs
	return nil
}

// ParseChain reads a client chain: PEM certificates only, within the
// bounds (MaxChainBytes, MaxChainCerts), through the suite's one strict
// PEM reader. A private key is refused: explain never needs one.
func ParseChain(data []byte) ([]*x509.Certificate, error) {
	if len(data) > MaxChainBytes {
		return nil, fmt.Errorf("chain of %d bytes: at most %d", len(data), MaxChainBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	blocks, err := material.DecodePEM(data)
	if err != nil {
		return nil, fmt.Errorf("chain: %w", err)
	}
	if len(blocks) == 0 {
		return nil, errors.New("chain: no PEM block; give the client's certificate (and its intermediates) as PEM")
	}
	var certs []*x509.Certificate
	for _, b := range blocks {
		if strings.Contains(b.Type, "PRIVATE KEY") {
			return nil, errors.New("chain: holds a private key: explain takes certificates only, never a key; give the certificate file alone")
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("chain: a %q block: only CERTIFICATE blocks are read", b.Type)
		}
		if len(certs) == MaxChainCerts {
			return nil, fmt.Errorf("chain: more than %d certificates", MaxChainCerts)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("chain: certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// printable reports whether s holds no control character.
func printable(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f })
}
