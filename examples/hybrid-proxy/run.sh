#!/usr/bin/env bash
# Example 4 (hybrid-proxy): the four cases of the hybrid reverse proxy, one
# Caddy site per case (https://caseN.example.test:844N), in front of one
# nginx origin with a plain (9080), a TLS (9443) and an mTLS (9444)
# listener. Ctrl-C ends the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init openssl curl nginx
export EX_DIR="${EX_DIR:-$here/run}" TL_ADMIN="${TL_ADMIN:-localhost:2019}"
export CASE1_PORT="${CASE1_PORT:-8441}" CASE2_PORT="${CASE2_PORT:-8442}" CASE3_PORT="${CASE3_PORT:-8443}" CASE4_PORT="${CASE4_PORT:-8444}"
export ORIGIN_HTTP_PORT="${ORIGIN_HTTP_PORT:-9080}" ORIGIN_TLS_PORT="${ORIGIN_TLS_PORT:-9443}" ORIGIN_MTLS_PORT="${ORIGIN_MTLS_PORT:-9444}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR"
export HOME="$EX_DIR/home" XDG_DATA_HOME="$EX_DIR/home/data" XDG_CONFIG_HOME="$EX_DIR/home/config"
cd "$EX_DIR"

# the proxy's server certificates (inbound, all cases), one per application
# domain, from a test CA standing in for a public one
mkca public-ca "Example Public CA"
for n in 1 2 3 4; do
	mkleaf "case$n" "case$n.example.test" public-ca serverAuth "subjectAltName=DNS:case$n.example.test"
done
# the enterprise CA: the origin's server certificate (verified by the proxy
# in cases 2, 3, 4), the proxy's client certificate (case 3, verified by
# the origin), and the clients' certificates of case 4
mkca enterprise-ca "Example Enterprise CA"
mkleaf origin origin.internal enterprise-ca serverAuth "subjectAltName=DNS:origin.internal"
mkleaf proxy-client hybrid-proxy enterprise-ca clientAuth ""
mkleaf employee employee enterprise-ca clientAuth ""
# the client CA: the clients' certificates of case 3
mkca client-ca "Example Client CA"
mkleaf partner partner client-ca clientAuth ""

# the origin: nginx, its config filled in from origin-nginx.conf
mkdir -p origin
sed -e "s|@EX_DIR@|$EX_DIR|g" -e "s|@ORIGIN_HTTP_PORT@|$ORIGIN_HTTP_PORT|g" \
	-e "s|@ORIGIN_TLS_PORT@|$ORIGIN_TLS_PORT|g" -e "s|@ORIGIN_MTLS_PORT@|$ORIGIN_MTLS_PORT|g" \
	"$here/origin-nginx.conf" > origin/nginx.conf

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
nginx -q -t -e stderr -p "$EX_DIR/origin" -c nginx.conf
nginx -e stderr -p "$EX_DIR/origin" -c nginx.conf &
"$caddy" run --config "$here/Caddyfile" --adapter caddyfile &
for port in "$ORIGIN_HTTP_PORT" "$ORIGIN_TLS_PORT" "$ORIGIN_MTLS_PORT" "$CASE1_PORT" "$CASE2_PORT" "$CASE3_PORT" "$CASE4_PORT"; do
	wait_port "$port"
done

url() { echo "--cacert public-ca.crt --resolve case$1.example.test:$2:127.0.0.1 https://case$1.example.test:$2/"; }
cat <<MSG

hybrid-proxy: Caddy on https://caseN.example.test:$CASE1_PORT..$CASE4_PORT, nginx as the origin.
In another terminal:

  cd $EX_DIR
  curl $(url 1 "$CASE1_PORT")
      # origin: plain HTTP, no TLS on this leg
  curl $(url 2 "$CASE2_PORT")
      # origin: TLS, proxy's client certificate: []
  curl --cert partner.crt --key partner.key $(url 3 "$CASE3_PORT")
      # origin: mTLS, proxy's client certificate: [CN=hybrid-proxy] (verify SUCCESS)
  curl --cert employee.crt --key employee.key $(url 4 "$CASE4_PORT")
      # origin: TLS, proxy's client certificate: []
  curl $(url 3 "$CASE3_PORT")
      # refused: no client certificate (the same on case 4)
  curl --cert employee.crt --key employee.key $(url 3 "$CASE3_PORT")
      # refused: case 3 trusts the client CA only
  $caddy trustline topology --address $TL_ADMIN
  curl -s $TL_ADMIN/metrics | grep not_after

Ctrl-C stops Caddy and nginx.

MSG
wait
