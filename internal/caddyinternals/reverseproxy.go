package caddyinternals

// ReverseProxyH1OnlyVar is the request variable by which Caddy's
// reverse_proxy asks its transport for an HTTP/1.1-only TLS connection
// (a WebSocket upgrade); Caddy's own http transport honours it, and so
// must a transport that dials TLS itself (the suite's mtls transport).
// The name is Caddy's unexported tlsH1OnlyVarKey;
// TestReverseProxyH1OnlyVar pins it.
const ReverseProxyH1OnlyVar = "reverse_proxy.tls_h1_only"
