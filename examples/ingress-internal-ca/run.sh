#!/usr/bin/env bash
# Example 5 (ingress-internal-ca):
#  a) an edge Caddy on https://api.example.test:8443 (the API certificate)
#     re-encrypting to a backend Caddy on 127.0.0.1:9443 (an internal-CA
#     certificate), trusting the internal CA for it;
#  b) without an ingress: one Caddy with the API certificate on
#     127.0.0.1:10443 and the internal certificate on 127.0.0.2:10443.
# Ctrl-C ends the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init openssl curl
export EX_DIR="${EX_DIR:-$here/run}"
export EDGE_PORT="${EDGE_PORT:-8443}" BACKEND_PORT="${BACKEND_PORT:-9443}" SINGLE_PORT="${SINGLE_PORT:-10443}"
export EDGE_ADMIN="${EDGE_ADMIN:-localhost:2019}" BACKEND_ADMIN="${BACKEND_ADMIN:-localhost:2020}" SINGLE_ADMIN="${SINGLE_ADMIN:-localhost:2021}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR"
cd "$EX_DIR"

# the API certificate (APP mode), from a test CA standing in for a public one
mkca public-ca "Example Public CA"
mkleaf api api.example.test public-ca serverAuth "subjectAltName=DNS:api.example.test"
# internal certificates (UNIT mode), from the internal CA
mkca internal-ca "Example Internal CA"
mkleaf backend backend.internal internal-ca serverAuth "subjectAltName=DNS:backend.internal"
mkleaf node1 node1.internal internal-ca serverAuth,clientAuth "subjectAltName=DNS:node1.internal"
mkleaf node2 node2.internal internal-ca serverAuth,clientAuth "subjectAltName=DNS:node2.internal"

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
start() { # name caddyfile
	mkdir -p "$EX_DIR/$1"
	HOME="$EX_DIR/$1" XDG_DATA_HOME="$EX_DIR/$1/data" XDG_CONFIG_HOME="$EX_DIR/$1/config" \
		"$caddy" run --config "$here/$2" --adapter caddyfile &
}
start backend Caddyfile.backend
start edge Caddyfile.edge
start single Caddyfile.single
wait_port 127.0.0.1 "$BACKEND_PORT"
wait_port 127.0.0.1 "$EDGE_PORT"
wait_port 127.0.0.1 "$SINGLE_PORT"
wait_port 127.0.0.2 "$SINGLE_PORT"

cat <<MSG

ingress-internal-ca, in another terminal:

  cd $EX_DIR
  # a) through the edge: the client trusts the public CA, the edge the internal CA
  curl --cacert public-ca.crt --resolve api.example.test:$EDGE_PORT:127.0.0.1 https://api.example.test:$EDGE_PORT/
      # backend: served with the internal CA's certificate ...
  curl --cacert public-ca.crt --resolve backend.internal:$BACKEND_PORT:127.0.0.1 https://backend.internal:$BACKEND_PORT/
      # refused: the backend's certificate is not publicly trusted
  # b) one Caddy, two addresses, two certificates
  openssl s_client -brief -connect 127.0.0.1:$SINGLE_PORT -servername api.example.test </dev/null 2>&1 | grep Peer
      # the API certificate on the external address
  curl --cacert internal-ca.crt --cert node2.crt --key node2.key --resolve node1.internal:$SINGLE_PORT:127.0.0.2 https://node1.internal:$SINGLE_PORT/
      # peer: ... hello CN=node2.internal (mTLS on the peer address)
  $caddy trustline topology --address $EDGE_ADMIN     # the edge's report
  $caddy trustline topology --address $SINGLE_ADMIN   # the single node's report

Ctrl-C stops the three Caddy instances.

MSG
wait
