#!/usr/bin/env bash
# Starts one node of the cluster example in the foreground:
#   API_PORT=9004 ADMIN=localhost:2022 ./node.sh d 127.0.0.4
#   API_PORT=9005 ADMIN=localhost:2023 ./node.sh web 127.0.0.5 spiffe://cluster.local/app/web
# The third argument is the node's SPIFFE ID (default spiffe://cluster.local/node/<name>).
# Needs the Redis and the storage key that run.sh made (EX_DIR, REDIS).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
[ $# -ge 2 ] || { echo "usage: API_PORT=<port> ADMIN=<host:port> $0 <name> <ip> [spiffe_id]" >&2; exit 2; }
caddy="${TRUSTLINE_CADDY:-$root/caddy}"
export EX_DIR="${EX_DIR:-$here/run}"
export NODE="$1" NODE_IP="$2" SPIFFE_ID="${3:-spiffe://cluster.local/node/$1}"
export REDIS="${REDIS:-127.0.0.1:${REDIS_PORT:-6390}}" STORAGE_KEY="${STORAGE_KEY:-$EX_DIR/storage.key}"
export PEER_PORT="${PEER_PORT:-8443}" API_PORT="${API_PORT:?set API_PORT}" ADMIN="${ADMIN:?set ADMIN}"
[ -r "$STORAGE_KEY" ] || { echo "no storage key at $STORAGE_KEY: start ./run.sh first" >&2; exit 1; }
dir="$EX_DIR/node-$NODE"
mkdir -p "$dir"
HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
	exec "$caddy" run --config "$here/Caddyfile" --adapter caddyfile
