#!/usr/bin/env bash
# Builds ./caddy with xcaddy and runs the demo (examples/demo/Caddyfile):
# mutual TLS against a hot-reloaded directory of CAs, on localhost only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
for tool in openssl curl; do
	command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
# TRUSTLINE_CADDY names an already built binary (the demo's test uses it)
caddy="${TRUSTLINE_CADDY:-}"
if [ -z "$caddy" ]; then
	scripts/build.sh
	caddy="$root/caddy"
fi
export DEMO_DIR="${DEMO_DIR:-$root/demo-run}"
export DEMO_PORT="${DEMO_PORT:-8443}"
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR/trusted-cas" "$DEMO_DIR/other"
export HOME="$DEMO_DIR/home" XDG_DATA_HOME="$DEMO_DIR/home/data" XDG_CONFIG_HOME="$DEMO_DIR/home/config"
cd "$DEMO_DIR"
mkca() { # name
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=$1" -keyout "$1.key" -out "$1.crt" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
mkclient() { # name ca
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
		-keyout "$1.key" -out "$1.csr" 2>/dev/null
	printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://demo.local/%s\n' "$1" > "$1.ext"
	openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 7 \
		-extfile "$1.ext" -out "$1.crt" 2>/dev/null
}
mkca team-a-ca && mkca team-b-ca
mkclient alice team-a-ca && mkclient bob team-b-ca
cp team-a-ca.crt trusted-cas/
cat <<MSG

trustline demo: https://localhost:$DEMO_PORT requires a client certificate
verified against every CA file in $DEMO_DIR/trusted-cas (now: team-a-ca).
In another terminal, try:

  cd $DEMO_DIR
  curl -k --cert alice.crt --key alice.key https://localhost:$DEMO_PORT/   # team A: accepted
  curl -k --cert bob.crt --key bob.key https://localhost:$DEMO_PORT/       # team B: refused
  cp team-b-ca.crt trusted-cas/                                            # trust team B...
  curl -k --cert bob.crt --key bob.key https://localhost:$DEMO_PORT/       # ...accepted within 2s, no reload
  rm trusted-cas/team-a-ca.crt                                             # stop trusting team A
  curl -k --cert alice.crt --key alice.key https://localhost:$DEMO_PORT/   # refused
  curl -s ${TL_ADMIN:-localhost:2019}/metrics | grep trustline_material                 # reloads, certificates, expiry
  curl -s '${TL_ADMIN:-localhost:2019}/trustline/topology?format=table'                  # where TLS ends, who trusts whom

(-k skips checking Caddy's internal-CA server certificate; its root is in
$XDG_DATA_HOME/caddy/pki/authorities/local/root.crt for --cacert.)
Ctrl-C stops Caddy.

MSG
exec "$caddy" run --config "$root/examples/demo/Caddyfile" --adapter caddyfile
