#!/usr/bin/env bash
# Example 1 (lb-termination): HAProxy terminates TLS on https://localhost:8443
# and forwards plain HTTP to Caddy on 127.0.0.1:9080, which trusts the
# client IP HAProxy sends and no one else's. Ctrl-C ends the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init openssl curl haproxy
export EX_DIR="${EX_DIR:-$here/run}" LB_PORT="${LB_PORT:-8443}" CADDY_PORT="${CADDY_PORT:-9080}" TL_ADMIN="${TL_ADMIN:-localhost:2019}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR"
export HOME="$EX_DIR/home" XDG_DATA_HOME="$EX_DIR/home/data" XDG_CONFIG_HOME="$EX_DIR/home/config"
cd "$EX_DIR"

# A test CA standing in for a public one, and the load balancer's
# certificate for localhost (HAProxy wants certificate and key in one file).
mkca ca "Example Public CA"
mkleaf lb "localhost" ca serverAuth "subjectAltName=DNS:localhost"
cat lb.crt lb.key > lb.pem

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
"$caddy" run --config "$here/Caddyfile" --adapter caddyfile &
wait_port "$CADDY_PORT"
haproxy -c -q -f "$here/haproxy.cfg"
haproxy -db -f "$here/haproxy.cfg" &
wait_port "$LB_PORT"

cat <<MSG

lb-termination: HAProxy terminates TLS on https://localhost:$LB_PORT; Caddy serves
plain HTTP on 127.0.0.1:$CADDY_PORT and trusts X-Forwarded-For only from 127.0.0.2
(HAProxy). In another terminal (the client connects from 127.0.0.3):

  cd $EX_DIR
  curl --interface 127.0.0.3 --cacert ca.crt https://localhost:$LB_PORT/
      # client_ip=127.0.0.3 remote=127.0.0.2: Caddy believes HAProxy's X-Forwarded-For
  curl --interface 127.0.0.3 --cacert ca.crt -H 'X-Forwarded-For: 6.6.6.6' https://localhost:$LB_PORT/
      # client_ip=127.0.0.3: HAProxy replaced the forged header
  curl --interface 127.0.0.3 -H 'X-Forwarded-For: 6.6.6.6' http://127.0.0.1:$CADDY_PORT/
      # client_ip=127.0.0.3 remote=127.0.0.3: straight to Caddy, the header is not trusted
  $caddy trustline topology --address $TL_ADMIN
      # the report flags the plaintext leg from HAProxy to Caddy

Ctrl-C stops Caddy and HAProxy.

MSG
wait
