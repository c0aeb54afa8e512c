#!/usr/bin/env bash
# Example (spire): a SPIRE server, one SPIRE agent per node, and two Caddy
# nodes whose identities (X509-SVIDs) and trust (the bundle) come from
# their agent's Workload API; node-to-node mutual TLS pinned by SPIFFE ID.
# All on 127.0.0.1. Ctrl-C ends the example.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../lib.sh"
ex_init curl
spire="${TRUSTLINE_SPIRE_DIR:-$("$root/scripts/build-spire.sh")}"
export EX_DIR="${EX_DIR:-$here/run}"
SERVER_PORT="${SERVER_PORT:-8081}" SVID_TTL="${SVID_TTL:-5m}"
A_PEER="${A_PEER:-8443}" B_PEER="${B_PEER:-8444}" A_API="${A_API:-9001}" B_API="${B_API:-9002}"
A_ADMIN="${A_ADMIN:-localhost:2019}" B_ADMIN="${B_ADMIN:-localhost:2020}"
rm -rf "$EX_DIR" && mkdir -p "$EX_DIR"
cd "$EX_DIR"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM

server() { "$spire/spire-server" "$@" -socketPath "$EX_DIR/server.sock"; }

# the SPIRE server: trust domain example.org, join-token node attestation
mkdir -p server
cat > server/server.conf <<CONF
server {
	bind_address = "127.0.0.1"
	bind_port = "$SERVER_PORT"
	socket_path = "$EX_DIR/server.sock"
	trust_domain = "example.org"
	data_dir = "$EX_DIR/server/data"
	log_level = "INFO"
	default_x509_svid_ttl = "$SVID_TTL"
}
plugins {
	DataStore "sql" {
		plugin_data {
			database_type = "sqlite3"
			connection_string = "$EX_DIR/server/data/datastore.sqlite3"
		}
	}
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "disk" {
		plugin_data {
			keys_path = "$EX_DIR/server/data/keys.json"
		}
	}
}
CONF
"$spire/spire-server" run -config server/server.conf >server/log 2>&1 &
for _ in $(seq 300); do server healthcheck >/dev/null 2>&1 && break; sleep 0.2; done
server healthcheck >/dev/null

# agent <name>: an agent for one node (or workload host), attested with a
# one-time join token; sets agent_id to its SPIFFE ID
agent() {
	local dir="$EX_DIR/agent-$1" token
	mkdir -p "$dir"
	token=$(server token generate -ttl 600 | awk '/^Token:/ {print $2}')
	cat > "$dir/agent.conf" <<CONF
agent {
	data_dir = "$dir/data"
	log_level = "INFO"
	server_address = "127.0.0.1"
	server_port = "$SERVER_PORT"
	socket_path = "$dir/agent.sock"
	trust_domain = "example.org"
	# a demo shortcut: a real agent is given the server's bundle
	insecure_bootstrap = true
	join_token = "$token"
}
plugins {
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "disk" {
		plugin_data {
			directory = "$dir/data"
		}
	}
	WorkloadAttestor "unix" {
		plugin_data {}
	}
}
CONF
	"$spire/spire-agent" run -config "$dir/agent.conf" >"$dir/log" 2>&1 &
	for _ in $(seq 300); do "$spire/spire-agent" healthcheck -socketPath "$dir/agent.sock" >/dev/null 2>&1 && break; sleep 0.2; done
	"$spire/spire-agent" healthcheck -socketPath "$dir/agent.sock" >/dev/null
	agent_id="spiffe://example.org/spire/agent/join_token/$token"
}

uid=$(id -u)
# entry <agent id> <spiffe id> <dns>: this uid, on that agent, gets the ID
entry() { server entry create -parentID "$1" -spiffeID "$2" -selector "unix:uid:$uid" -dns "$3" >/dev/null; }
agent a
entry "$agent_id" spiffe://example.org/node/a a.example.internal
agent b
entry "$agent_id" spiffe://example.org/node/b b.example.internal
# a workload of the same trust domain that is not a node
agent web
entry "$agent_id" spiffe://example.org/app/web web.example.internal

# node <name> <other> <peer port> <other's peer port> <api port> <admin>
node() {
	mkdir -p "$EX_DIR/node-$1"
	NODE=$1 OTHER=$2 PEER_PORT=$3 OTHER_PORT=$4 API_PORT=$5 ADMIN=$6 \
		SPIFFE_ENDPOINT_SOCKET="unix://$EX_DIR/agent-$1/agent.sock" \
		HOME="$EX_DIR/node-$1" XDG_DATA_HOME="$EX_DIR/node-$1/data" XDG_CONFIG_HOME="$EX_DIR/node-$1/config" \
		"$caddy" run --config "$here/Caddyfile" --adapter caddyfile &
}
node a b "$A_PEER" "$B_PEER" "$A_API" "$A_ADMIN"
node b a "$B_PEER" "$A_PEER" "$B_API" "$B_ADMIN"
# each node waits (wait 30s) until its agent has its SVID
wait_port 127.0.0.1 "$A_API"
wait_port 127.0.0.1 "$B_API"
wait_port 127.0.0.1 "$A_PEER"
wait_port 127.0.0.1 "$B_PEER"
# the trust bundle, and the web workload's SVID, from its agent
server bundle show > bundle.pem
mkdir -p web
for _ in $(seq 100); do
	"$spire/spire-agent" api fetch x509 -socketPath "$EX_DIR/agent-web/agent.sock" -write web >/dev/null 2>&1 && break
	sleep 0.2
done

cat <<MSG

spire, in another terminal:

  cd $EX_DIR
  curl http://127.0.0.1:$A_API/to/b      # b: hello spiffe://example.org/node/a   (a calls b over mTLS)
  curl http://127.0.0.1:$B_API/to/a      # a: hello spiffe://example.org/node/b
  # refused: an SVID of the trust domain, but not a node's
  curl --cacert bundle.pem --cert web/svid.0.pem --key web/svid.0.key --resolve a.example.internal:$A_PEER:127.0.0.1 https://a.example.internal:$A_PEER/
  # the SVIDs and bundles each node holds
  curl -s http://$A_ADMIN/metrics | grep -e trustline_material -e trustline_spiffe_workload

Ctrl-C stops the nodes, the agents and the server.

MSG
wait
