package topology

import (
	"slices"
	"strings"
	"time"
)

// Report answers, for one Caddy config, the three questions of the source
// documents: where does TLS end, who acts as the TLS server, and who must
// trust whom. It lists every listener with its routes (the inbound leg and
// the outbound legs), every certificate in play, the findings, and what it
// did not analyse.
type Report struct {
	// Generated is the time the report was made (and the reference time
	// for expiry findings).
	Generated time.Time `json:"generated"`
	// Listeners: one per listen address of each server (HTTP and layer 4).
	Listeners []*Listener `json:"listeners"`
	// Certificates in play: server certificates, client identities and
	// trust anchors.
	Certificates []*Certificate `json:"certificates"`
	// Findings from the decision framework, most severe first.
	Findings []Finding `json:"findings"`
	// NotAnalysed lists the modules the report does not understand; what
	// they do to TLS is not guessed.
	NotAnalysed []NotAnalysed `json:"not_analysed,omitempty"`
}

// Listener is one listen address of an HTTP or layer-4 server.
type Listener struct {
	// App is "http" or "layer4".
	App string `json:"app"`
	// Server is the server's name in the config (srv0, ...).
	Server string `json:"server"`
	// Path is the server's config path.
	Path string `json:"path"`
	// Address as configured (":443", "127.0.0.1:8080", "unix//run/x.sock").
	Address string `json:"address"`
	// Inbound is what arrives on the socket: "http" (plain HTTP), "https"
	// (Caddy terminates TLS), or "tcp" (layer 4: raw bytes, routed by
	// the routes below).
	Inbound string `json:"inbound"`
	// Notes about the listener: automatic HTTPS, PROXY protocol,
	// trusted_proxies, listener wrappers.
	Notes []string `json:"notes,omitempty"`
	// TrustedProxies are the ranges whose X-Forwarded-For Caddy trusts.
	TrustedProxies []string `json:"trusted_proxies,omitempty"`
	// Routes in order.
	Routes []*Route `json:"routes"`
}

// Route is one top-level route of a server, with the legs of the requests
// (or connections) it handles.
type Route struct {
	// Path is the route's config path.
	Path string `json:"path"`
	// Hosts are the host names (HTTP) or SNI names (layer 4) the route
	// matches; empty means any.
	Hosts []string `json:"hosts,omitempty"`
	// Match summarises the other matchers ("path /api/*", "remote_ip").
	Match []string `json:"match,omitempty"`
	// Inbound is the leg from the client to Caddy.
	Inbound Inbound `json:"inbound"`
	// Outbound are the legs from Caddy to upstreams.
	Outbound []*Outbound `json:"outbound,omitempty"`
	// Handlers are the names of the handlers the route runs (nested
	// subroutes flattened), in order.
	Handlers []string `json:"handlers,omitempty"`
}

// Inbound leg modes.
const (
	ModePlainHTTP   = "http"        // plain HTTP: TLS, if any, ended before Caddy
	ModeTLS         = "tls"         // TLS terminated by Caddy
	ModeMTLS        = "mtls"        // TLS terminated by Caddy, client certificates checked
	ModePassthrough = "passthrough" // TLS passed through at layer 4, not decrypted
	ModeTCP         = "tcp"         // raw TCP at layer 4 (TLS unknown)
	ModeRefused     = "refused"     // refused at layer 4 with a TLS alert
)

// Inbound is the leg from the client (or the load balancer) to Caddy.
type Inbound struct {
	// Mode: http, tls, mtls, passthrough or tcp.
	Mode string `json:"mode"`
	// Certificate says where the server certificate comes from: "files",
	// "inline (load_pem)", "internal CA local", "ACME", "keystore", ...
	Certificate string `json:"certificate,omitempty"`
	// Certificates are the IDs (into Report.Certificates) of the server
	// certificates that may be served.
	Certificates []string `json:"certificates,omitempty"`
	// ClientAuth, when TLS is terminated with client_authentication.
	ClientAuth *ClientAuth `json:"client_auth,omitempty"`
	// PeerPatterns are identity patterns of peer matchers on the route.
	PeerPatterns []string `json:"peer_patterns,omitempty"`
	// PassthroughTo are the upstreams a layer-4 route passes TLS to.
	PassthroughTo []string `json:"passthrough_to,omitempty"`
	// Refusal is the TLS alert a refusing layer-4 route answers with.
	Refusal string `json:"refusal,omitempty"`
}

// ClientAuth is the client-certificate check of a TLS connection policy.
type ClientAuth struct {
	// Path of the client_authentication object.
	Path string `json:"path"`
	// Mode is the effective mode (Caddy's default filled in): request,
	// require, verify_if_given, require_and_verify.
	Mode string `json:"mode"`
	// Verified says how a presented certificate is verified, or
	// "not verified".
	Verified string `json:"verified"`
	// Pools the certificates are verified against.
	Pools []*Pool `json:"pools,omitempty"`
	// Verifiers are the client_auth verifier modules, described.
	Verifiers []string `json:"verifiers,omitempty"`
	// Patterns are identity patterns required by verifiers.
	Patterns []string `json:"patterns,omitempty"`
	// CRLs are the CRL files the verifiers check client certificates
	// against, read.
	CRLs []*CRL `json:"crls,omitempty"`
}

// Pool is a set of trust anchors from one source.
type Pool struct {
	// Path of the pool in the config.
	Path string `json:"path"`
	// Source is the pool module (file, inline, truststore, bundle,
	// pki_root, ..., or "system roots").
	Source string `json:"source"`
	// Description: the files or store it reads.
	Description string `json:"description"`
	// Live is true when the pool is read again as its files change
	// (the suite's sources, followed by live_trust and the mtls
	// transport).
	Live bool `json:"live,omitempty"`
	// Anchors are the IDs of the trust anchors read from it.
	Anchors []string `json:"anchors,omitempty"`
}

// Outbound leg modes.
const (
	OutPlainHTTP = "http"    // plain HTTP (or FastCGI) to the upstream
	OutTLS       = "tls"     // TLS to the upstream
	OutMTLS      = "mtls"    // TLS with a client certificate
	OutTCP       = "tcp"     // raw TCP (layer 4, what Caddy received)
	OutUnknown   = "unknown" // transport not analysed
)

// Outbound is a leg from Caddy to upstreams: a reverse_proxy handler or a
// layer-4 proxy.
type Outbound struct {
	// Path of the handler.
	Path string `json:"path"`
	// Handler is "reverse_proxy" or "layer4 proxy".
	Handler string `json:"handler"`
	// When summarises the matchers of nested routes that lead to it.
	When []string `json:"when,omitempty"`
	// Upstreams are the dial addresses.
	Upstreams []string `json:"upstreams"`
	// Mode: http, tls, mtls, tcp or unknown.
	Mode string `json:"mode"`
	// Transport is the transport module (http, mtls, fastcgi, ...).
	Transport string `json:"transport,omitempty"`
	// TrustPool the upstream's certificate is verified against; nil with
	// TLS means the system roots.
	TrustPool *Pool `json:"trust_pool,omitempty"`
	// ClientIdentity presented to the upstream, described.
	ClientIdentity string `json:"client_identity,omitempty"`
	// ClientCertificates are the IDs of the client certificates.
	ClientCertificates []string `json:"client_certificates,omitempty"`
	// UpstreamIdentity pins the upstream's identity (mtls transport).
	UpstreamIdentity []string `json:"upstream_identity,omitempty"`
	// ServerName is the SNI and name checked, when set.
	ServerName string `json:"server_name,omitempty"`
	// InsecureSkipVerify: the upstream's certificate is not verified.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
	// IdentityHeaders are client-identity headers sent to the upstream.
	IdentityHeaders []string `json:"identity_headers,omitempty"`
	// ProxyProtocol is the PROXY protocol version sent to the upstream
	// ("v1", "v2"), when one is.
	ProxyProtocol string `json:"proxy_protocol,omitempty"`
	// IdentityTLVs: the verified client identity travels in the PROXY v2
	// header (the passthrough handler's proxy_protocol_identity).
	IdentityTLVs bool `json:"identity_tlvs,omitempty"`
	// Notes: except_ports, PROXY protocol, dynamic upstreams...
	Notes []string `json:"notes,omitempty"`
}

// Certificate roles.
const (
	RoleServer      = "server"
	RoleClient      = "client"
	RoleTrustAnchor = "trust_anchor"
)

// Certificate is one certificate in play.
type Certificate struct {
	// ID is a short reference used by listeners and routes ("c1").
	ID string `json:"id"`
	// Role: server, client or trust_anchor.
	Role string `json:"role"`
	// Source says where it comes from: "file /etc/x.crt", "load_pem",
	// "keystore pkcs12 /etc/x.p12", "managed by Caddy (internal CA local)".
	Source string `json:"source"`
	// Suite is true when the certificate comes from one of the suite's
	// reloadable sources, whose expiry is already on /metrics as
	// trustline_material_not_after_timestamp_seconds.
	Suite bool `json:"suite,omitempty"`
	// Subject, Issuer: distinguished names (RFC 2253).
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	// Names: DNS, IP, URI and email SANs.
	Names []string `json:"names,omitempty"`
	// NotBefore, NotAfter: the validity, when the certificate was read.
	NotBefore *time.Time `json:"not_before,omitempty"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
	// RenewBy is set on a certificate Caddy manages and renews itself
	// (internal CA, ACME; read from its certificate cache): the time by
	// which Caddy should have replaced it, its renewal window plus a grace
	// for retries. Such a certificate is judged by this time, not by the
	// expiry window: a 12-hour internal leaf is always "expiring soon",
	// and renewed long before it expires.
	RenewBy *time.Time `json:"renew_by,omitempty"`
	// SHA256 fingerprint (hex) of the certificate, when read.
	SHA256 string `json:"sha256,omitempty"`
	// NotRead says why the certificate was not read ("managed by Caddy",
	// "password not resolvable: ...", the file error).
	NotRead string `json:"not_read,omitempty"`
	// UsedBy are the config paths that refer to it.
	UsedBy []string `json:"used_by"`

	// readErr is why reading it failed (NotRead by design, such as a
	// certificate Caddy manages, has none).
	readErr error
}

// Severity of a finding.
type Severity string

// Severities, from least to most severe.
const (
	SeverityInfo    Severity = "info"
	SeverityWarning Severity = "warning"
	SeverityError   Severity = "error"
)

// Rank orders severities: info 1, warning 2, error 3, anything else 0.
func (s Severity) Rank() int {
	return slices.Index([]Severity{SeverityInfo, SeverityWarning, SeverityError}, s) + 1
}

// ParseSeverity reads a severity name (case-insensitive).
func ParseSeverity(s string) (Severity, bool) {
	sev := Severity(strings.ToLower(strings.TrimSpace(s)))
	return sev, sev.Rank() > 0
}

// Finding kinds.
const (
	KindPlaintextLeg       = "plaintext_leg"
	KindInsecureSkipVerify = "insecure_skip_verify"
	KindClientAuthNoVerify = "client_auth_not_verified"
	KindClientAuthOptional = "client_auth_optional"
	KindClientAuthSystem   = "client_auth_system_roots"
	KindIdentityHeaders    = "identity_headers_not_stripped"
	KindHeaderSetDeleted   = "identity_header_deleted"
	KindCertExpired        = "certificate_expired"
	KindCertExpiring       = "certificate_expiring"
	KindRenewalOverdue     = "certificate_renewal_overdue"
	KindCertNotRead        = "certificate_not_read"
	KindKeyNotFound        = "key_file_missing"
	KindTrustAnchorExpired = "trust_anchor_expired"
	KindTrustAnchorSoon    = "trust_anchor_expiring"
	KindPassthroughNoDef   = "passthrough_without_default"
	KindUpstreamSystemRoot = "upstream_system_roots"
	KindCertNotFound       = "certificate_not_found"
	KindL4TLSNoResume      = "layer4_tls_no_resumption"
)

// Finding is one thing the operator should know, with where it is in the
// config and how to fix it.
type Finding struct {
	Severity Severity `json:"severity"`
	// Kind is a stable identifier of the rule (plaintext_leg, ...).
	Kind string `json:"kind"`
	// Path is the config path the finding is about.
	Path string `json:"path"`
	// Location is the Caddyfile line the config at Path comes from
	// ("Caddyfile:12"), when the report was made from a Caddyfile (the
	// CLI's --config); a running instance's report has JSON only.
	Location string `json:"location,omitempty"`
	// Message says what is wrong.
	Message string `json:"message"`
	// Fix says how to fix it.
	Fix string `json:"fix"`
}

// NotAnalysed is a module the report does not understand.
type NotAnalysed struct {
	Path   string `json:"path"`
	Module string `json:"module"`
	// Reason: "unknown handler", "unknown transport", ...
	Reason string `json:"reason"`
}

// Count returns the number of findings at or above min.
func (r *Report) Count(min Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity.Rank() >= min.Rank() {
			n++
		}
	}
	return n
}

// Certificate returns the certificate with the given ID, or nil.
func (r *Report) Certificate(id string) *Certificate {
	if i := slices.IndexFunc(r.Certificates, func(c *Certificate) bool { return c.ID == id }); i >= 0 {
		return r.Certificates[i]
	}
	return nil
}
