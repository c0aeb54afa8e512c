#!/usr/bin/env bash
# Example 6 (cluster): a Redis and three Caddy nodes on 127.0.0.1, .2 and .3,
# sharing one internal CA through Redis; node-to-node mutual TLS with a
# SPIFFE ID per node. Ctrl-C ends the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init openssl curl redis-server
export EX_DIR="${EX_DIR:-$here/run}"
export REDIS_PORT="${REDIS_PORT:-6390}" PEER_PORT="${PEER_PORT:-8443}"
export REDIS="127.0.0.1:$REDIS_PORT"
A_API="${A_API:-9001}" B_API="${B_API:-9002}" C_API="${C_API:-9003}"
A_ADMIN="${A_ADMIN:-localhost:2019}" B_ADMIN="${B_ADMIN:-localhost:2020}" C_ADMIN="${C_ADMIN:-localhost:2021}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR/redis"
cd "$EX_DIR"

# the key that seals every value in Redis (the CA's keys among them)
openssl rand -base64 32 > storage.key
chmod 600 storage.key
# an intruder: a certificate with a node's SPIFFE ID, from another CA
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=Other CA" \
	-keyout other-ca.key -out other-ca.crt -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=intruder" -keyout intruder.key -out intruder.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://cluster.local/node/x\n' > intruder.ext
openssl x509 -req -in intruder.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -days 30 -extfile intruder.ext -out intruder.crt 2>/dev/null

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
# Redis keeps its data across a restart (append-only file)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$EX_DIR/redis" --appendonly yes --save "" >"$EX_DIR/redis/log" 2>&1 &
wait_port 127.0.0.1 "$REDIS_PORT"
# the first node creates the CA in Redis; the others find it there
API_PORT="$A_API" ADMIN="$A_ADMIN" "$here/node.sh" a 127.0.0.1 &
wait_port 127.0.0.1 "$A_API"
API_PORT="$B_API" ADMIN="$B_ADMIN" "$here/node.sh" b 127.0.0.2 &
API_PORT="$C_API" ADMIN="$C_ADMIN" "$here/node.sh" c 127.0.0.3 &
wait_port 127.0.0.2 "$PEER_PORT"
wait_port 127.0.0.3 "$PEER_PORT"
wait_port 127.0.0.1 "$B_API"
wait_port 127.0.0.1 "$C_API"
# the CA's certificates (intermediate and root), from a node's admin API
curl -sf "http://$A_ADMIN/pki/ca/local/certificates" > ca.crt

cat <<MSG

cluster, in another terminal:

  cd $EX_DIR
  curl http://127.0.0.1:$A_API/to/b      # b: hello spiffe://cluster.local/node/a   (a calls b over mTLS)
  curl http://127.0.0.1:$C_API/to/a      # a: hello spiffe://cluster.local/node/c
  # refused: a node certificate from another CA
  curl --cacert ca.crt --cert intruder.crt --key intruder.key --resolve a.cluster.internal:$PEER_PORT:127.0.0.1 https://a.cluster.internal:$PEER_PORT/
  # a node joins: it gets its certificate from the CA in Redis
  API_PORT=9004 ADMIN=localhost:2022 $here/node.sh d 127.0.0.4 &
  curl http://127.0.0.1:$A_API/to/d      # d: hello spiffe://cluster.local/node/a
  # refused: a certificate from the cluster's CA, but not a node's identity
  API_PORT=9005 ADMIN=localhost:2023 $here/node.sh web 127.0.0.5 spiffe://cluster.local/app/web &
  curl http://127.0.0.1:9005/to/a        # 502: a refused spiffe://cluster.local/app/web
  # one node renews the CA's intermediate for all; the others follow
  curl -X POST "http://$B_ADMIN/trustline/cluster/renew?ca=local"
  curl http://$A_ADMIN/trustline/cluster
  $TRUSTLINE_CADDY trustline topology --address $A_ADMIN

Ctrl-C stops Redis and the nodes.

MSG
wait
