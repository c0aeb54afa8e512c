#!/usr/bin/env bash
# Example l4-mtls: Caddy on 127.0.0.1:5433 terminates the clients' mTLS at
# layer 4 and re-encrypts to a database stand-in (nginx stream on
# 127.0.0.1:6433) with its own client certificate. Ctrl-C ends the
# example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init openssl nginx
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || { apt-get update -qq && apt-get install -y -qq libnginx-mod-stream >/dev/null; }
export EX_DIR="${EX_DIR:-$here/run}" DB_PORT="${DB_PORT:-5433}" BACKEND_PORT="${BACKEND_PORT:-6433}" SITE_PORT="${SITE_PORT:-9444}" TL_ADMIN="${TL_ADMIN:-localhost:2019}"
export CLIENT_P12_PASSWORD="${CLIENT_P12_PASSWORD:-example-keystore-secret}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR"
chmod 755 "$EX_DIR" # nginx's worker reads the certificates
export HOME="$EX_DIR/home" XDG_DATA_HOME="$EX_DIR/home/data" XDG_CONFIG_HOME="$EX_DIR/home/config"
cd "$EX_DIR"

# One mesh CA for everything here: the clients, Caddy's certificate for
# db.example.test, the database's, and Caddy's client identity.
mkca mesh "Example Mesh CA"
mkleaf db "db.example.test" mesh serverAuth "subjectAltName=DNS:db.example.test"
mkleaf backend "backend.internal" mesh serverAuth "subjectAltName=DNS:backend.internal"
# the clients' X509-SVIDs: one SPIFFE ID each, digitalSignature, clientAuth
mkleaf billing "billing" mesh clientAuth $'subjectAltName=URI:spiffe://example.test/app/billing\nkeyUsage=critical,digitalSignature'
mkleaf intruder "report" mesh clientAuth $'subjectAltName=URI:spiffe://example.test/batch/report\nkeyUsage=critical,digitalSignature'
mkleaf caddy-client "caddy-proxy" mesh clientAuth
# Caddy's client identity as an operator often gets it: a PKCS#12 keystore
openssl pkcs12 -export -in caddy-client.crt -inkey caddy-client.key -certfile mesh.crt \
	-passout env:CLIENT_P12_PASSWORD -out caddy-client.p12
chmod 644 ./*.key

sed -e "s#EX_DIR#$EX_DIR#g" -e "s#BACKEND_PORT#$BACKEND_PORT#g" "$here/backend-nginx.conf" >nginx.conf
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
nginx -p "$EX_DIR" -c "$EX_DIR/nginx.conf" &
wait_port "$BACKEND_PORT"
"$caddy" run --config "$here/Caddyfile" --adapter caddyfile &
wait_port "$DB_PORT"

cat <<MSG

l4-mtls: Caddy on 127.0.0.1:$DB_PORT (mTLS in) -> the database stand-in on
127.0.0.1:$BACKEND_PORT (mTLS out, PROXY v2). In another terminal:

  cd $EX_DIR
  openssl s_client -quiet -connect 127.0.0.1:$DB_PORT -servername db.example.test -CAfile mesh.crt \\
      -cert billing.crt -key billing.key </dev/null
      # db backend: TLS from CN=caddy-proxy, verified SUCCESS, client address 127.0.0.1
  openssl s_client -quiet -connect 127.0.0.1:$DB_PORT -servername db.example.test -CAfile mesh.crt \\
      -cert intruder.crt -key intruder.key </dev/null
      # ... alert bad certificate: spiffe://example.test/batch/report is not allowed (Caddy's log says why)
  openssl s_client -quiet -connect 127.0.0.1:$DB_PORT -servername db.example.test -CAfile mesh.crt </dev/null
      # ... alert certificate required: no client certificate
  curl -s $TL_ADMIN/metrics | grep -E 'trustline_(passthrough_connections|peer_decisions|l4_tls)'
  $caddy trustline topology --address $TL_ADMIN

Ctrl-C stops Caddy and nginx.

MSG
wait
