#!/usr/bin/env bash
# Example 2 (lb-passthrough): HAProxy in mode tcp on 127.0.0.1:8443 passes
# TLS through to Caddy on 127.0.0.1:9443, which terminates it with its own
# certificate. Ctrl-C ends the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init openssl curl haproxy
export EX_DIR="${EX_DIR:-$here/run}" LB_PORT="${LB_PORT:-8443}" CADDY_PORT="${CADDY_PORT:-9443}" TL_ADMIN="${TL_ADMIN:-localhost:2019}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR"
export HOME="$EX_DIR/home" XDG_DATA_HOME="$EX_DIR/home/data" XDG_CONFIG_HOME="$EX_DIR/home/config"
cd "$EX_DIR"

# A test CA standing in for a public one, and Caddy's certificate for
# localhost: with passthrough the client-facing certificate is Caddy's.
mkca ca "Example Public CA"
mkleaf caddy "localhost/O=Caddy behind HAProxy" ca serverAuth "subjectAltName=DNS:localhost"

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
"$caddy" run --config "$here/Caddyfile" --adapter caddyfile &
wait_port "$CADDY_PORT"
haproxy -c -q -f "$here/haproxy.cfg"
haproxy -db -f "$here/haproxy.cfg" &
wait_port "$LB_PORT"

cat <<MSG

lb-passthrough: HAProxy (mode tcp) on 127.0.0.1:$LB_PORT passes TLS through to
Caddy on 127.0.0.1:$CADDY_PORT, which terminates it. In another terminal:

  cd $EX_DIR
  openssl s_client -brief -connect 127.0.0.1:$LB_PORT -servername localhost -CAfile ca.crt </dev/null
      # Peer certificate: CN = localhost, O = Caddy behind HAProxy: Caddy's, through HAProxy
  curl --interface 127.0.0.3 --cacert ca.crt --resolve localhost:$LB_PORT:127.0.0.1 https://localhost:$LB_PORT/
      # served by Caddy ...; client 127.0.0.3 (from the PROXY protocol header)
  $caddy trustline topology --address $TL_ADMIN

Ctrl-C stops Caddy and HAProxy.

MSG
wait
