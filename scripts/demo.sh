#!/usr/bin/env bash
# The trustline demo (examples/demo): mutual TLS on https://localhost:8443
# whose trusted CAs are the files in a directory, followed live; access by
# the client's SPIFFE ID; the topology report on the admin API.
#
# Builds ./caddy with scripts/build.sh (the only thing it writes into the
# checkout) unless TRUSTLINE_CADDY names a binary. Everything else (CAs,
# client certificates, Caddy's storage and autosaved config) goes to a new
# temporary directory, removed when the demo stops.
#
# Options, from the environment:
#   DEMO_PORT        the demo site's port (default 8443)
#   TL_ADMIN         Caddy's admin API address (default localhost:2019)
#   DEMO_DIR         where the files go; kept when the demo stops
#                    (default: a new directory from mktemp -d, removed)
#   TRUSTLINE_CADDY  an already built Caddy with the suite (default: build
#                    ./caddy with scripts/build.sh)
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
	sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
for tool in openssl curl; do
	command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
caddy="${TRUSTLINE_CADDY:-}"
if [ -z "$caddy" ]; then
	"$root/scripts/build.sh"
	caddy="$root/caddy"
fi
export DEMO_PORT="${DEMO_PORT:-8443}" TL_ADMIN="${TL_ADMIN:-localhost:2019}"
if [ -n "${DEMO_DIR:-}" ]; then
	mkdir -p "$DEMO_DIR"
	DEMO_DIR="$(cd "$DEMO_DIR" && pwd)"
	rm -rf "$DEMO_DIR/trusted-cas"
	kept="kept when the demo stops"
else
	DEMO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/trustline-demo.XXXXXX")"
	trap 'rm -rf "$DEMO_DIR"' EXIT
	kept="removed when the demo stops; set DEMO_DIR to keep it"
fi
export DEMO_DIR
mkdir -p "$DEMO_DIR/trusted-cas"
# Caddy's storage (its internal CA) and autosaved config stay in there too
export HOME="$DEMO_DIR/home" XDG_DATA_HOME="$DEMO_DIR/home/data" XDG_CONFIG_HOME="$DEMO_DIR/home/config"
cd "$DEMO_DIR"
mkca() { # name
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj "/CN=$1" -keyout "$1.key" -out "$1.crt" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
mkclient() { # name ca
	openssl req -x509 -CA "$2.crt" -CAkey "$2.key" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
		-subj "/CN=$1" -keyout "$1.key" -out "$1.crt" -addext basicConstraints=CA:FALSE \
		-addext keyUsage=critical,digitalSignature -addext extendedKeyUsage=clientAuth \
		-addext "subjectAltName=URI:spiffe://demo.local/$1" 2>/dev/null
}
mkca team-a-ca && mkca team-b-ca
mkclient alice team-a-ca && mkclient bob team-b-ca
cp team-a-ca.crt trusted-cas/
cat <<MSG

trustline demo: https://localhost:$DEMO_PORT requires a client certificate
verified against every CA file in $DEMO_DIR/trusted-cas (now: team-a-ca).

Files: $DEMO_DIR ($kept):
  team-a-ca.crt, team-b-ca.crt  two CAs; alice.crt/.key from team A, bob.crt/.key from team B
  trusted-cas/                  the directory the site trusts, followed live
  home/                         Caddy's storage (its internal CA) and autosaved config
Config: $root/examples/demo/Caddyfile; admin API on $TL_ADMIN.

In another terminal, try:

  cd $DEMO_DIR
  curl -k --cert alice.crt --key alice.key https://localhost:$DEMO_PORT/   # team A: accepted
  curl -k --cert bob.crt --key bob.key https://localhost:$DEMO_PORT/       # team B: refused
  cp team-b-ca.crt trusted-cas/                                            # trust team B...
  curl -k --cert bob.crt --key bob.key https://localhost:$DEMO_PORT/       # ...accepted within 2s, no reload
  rm trusted-cas/team-a-ca.crt                                             # stop trusting team A
  curl -k --cert alice.crt --key alice.key https://localhost:$DEMO_PORT/   # refused
  curl -s $TL_ADMIN/metrics | grep trustline_material                      # reloads, certificates, expiry
  curl -s '$TL_ADMIN/trustline/topology?format=table'                      # where TLS ends, who trusts whom

(-k skips checking the site's certificate, from Caddy's internal CA; its
root is home/data/caddy/pki/authorities/local/root.crt, for --cacert.)
Ctrl-C stops Caddy.

MSG
"$caddy" run --config "$root/examples/demo/Caddyfile" --adapter caddyfile
