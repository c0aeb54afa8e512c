#!/usr/bin/env bash
# Example 3 (lb-reencrypt): HAProxy terminates TLS on https://localhost:8443
# and re-encrypts to Caddy on 127.0.0.1:9443, verifying Caddy's internal-CA
# certificate and presenting its own client certificate, which Caddy
# requires. Ctrl-C ends the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init openssl curl haproxy
export EX_DIR="${EX_DIR:-$here/run}" LB_PORT="${LB_PORT:-8443}" CADDY_PORT="${CADDY_PORT:-9443}" TL_ADMIN="${TL_ADMIN:-localhost:2019}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR"
export HOME="$EX_DIR/home" XDG_DATA_HOME="$EX_DIR/home/data" XDG_CONFIG_HOME="$EX_DIR/home/config"
cd "$EX_DIR"

# the public side: a test CA standing in for a public one, HAProxy's certificate
mkca ca "Example Public CA"
mkleaf lb localhost ca serverAuth "subjectAltName=DNS:localhost"
cat lb.crt lb.key > lb.pem
# the internal side: one internal CA for Caddy's server certificate and
# HAProxy's client certificate
mkca internal-ca "Example Internal CA"
mkleaf caddy caddy.internal internal-ca serverAuth "subjectAltName=DNS:caddy.internal"
mkleaf haproxy-client haproxy-lb internal-ca clientAuth ""
cat haproxy-client.crt haproxy-client.key > haproxy-client.pem
# a client certificate from another CA, to see it refused
mkca other-ca "Some Other CA"
mkleaf intruder intruder other-ca clientAuth ""

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
"$caddy" run --config "$here/Caddyfile" --adapter caddyfile &
wait_port "$CADDY_PORT"
haproxy -c -q -f "$here/haproxy.cfg"
haproxy -db -f "$here/haproxy.cfg" &
wait_port "$LB_PORT"

direct="--cacert internal-ca.crt --resolve caddy.internal:$CADDY_PORT:127.0.0.1 https://caddy.internal:$CADDY_PORT/"
cat <<MSG

lb-reencrypt: HAProxy terminates TLS on https://localhost:$LB_PORT and re-encrypts
to Caddy on 127.0.0.1:$CADDY_PORT with its client certificate. In another terminal:

  cd $EX_DIR
  curl --cacert ca.crt https://localhost:$LB_PORT/
      # hello CN=haproxy-lb: HAProxy's certificate, verified by Caddy
  curl $direct
      # refused: no client certificate
  curl --cert intruder.crt --key intruder.key $direct
      # refused: a certificate from another CA
  $caddy trustline topology --address $TL_ADMIN

Ctrl-C stops Caddy and HAProxy.

MSG
wait
