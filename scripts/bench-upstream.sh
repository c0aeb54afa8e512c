#!/usr/bin/env bash
# bench-upstream.sh: requests per second through the mtls transport
# (client_identity pem + trust_pool) against Caddy's standard http transport
# (tls_client_auth + tls_trust_pool) with the same PEM files, side by side in
# one Caddy process, to one nginx backend that requires client certificates
# (ssl_verify_client on). Workload W3 of docs/benchmarks.md:
# terminate TLS, re-encrypt with a client certificate over HTTP, 100-byte
# responses; and W3N, the same with a new upstream connection (a full TLS
# handshake with the client certificate) for every request.
#
# Rounds are interleaved (std, mtls, std, mtls, ...); the report gives the
# median of each and the ratio mtls/std.
#
# Usage: scripts/bench-upstream.sh
# Environment: ROUNDS (5), DURATION (10s), WARMUP (2s), CONNS (16),
#              THREADS (1), WORKLOADS ("W3 W3N"), CADDY (a prebuilt binary).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
WORKLOADS=${WORKLOADS:-"W3 W3N"}

for tool in wrk nginx openssl curl; do
	command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "bench-upstream: $tool is not installed" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d -t bench-upstream.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

CADDY=${CADDY:-}
if [ -z "$CADDY" ]; then
	echo "building the suite..." >&2
	(cd "$ROOT" && go build -o "$WORK/caddy" ./cmd/trustline-caddy)
	CADDY=$WORK/caddy
fi

USED=" "
free_port() { # VAR: a loopback port nobody listens on (and not handed out yet)
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		case $USED in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			USED="$USED$p "
			printf -v "$1" '%s' "$p"
			return
		fi
	done
}
wait_port() {
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "port $1 did not open" >&2
	exit 1
}

# --- PKI (P-256, made by openssl) -------------------------------------------
cd "$WORK"
mkca() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=$1" -keyout "$1.key" -out "$1.crt" 2>/dev/null
}
mkleaf() { # name ca eku
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
		-keyout "$1.key" -out "$1.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' "$3" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 \
		-extfile "$1.ext" -out "$1.crt" 2>/dev/null
}
mkca backend-ca
mkca proxy-ca
mkleaf backend backend-ca serverAuth
mkleaf proxy proxy-ca clientAuth
mkleaf front backend-ca serverAuth

# --- nginx backend: requires the proxy's client certificate -------------------
free_port BACKEND
mkdir -p nginx/logs nginx/tmp
BODY=$(printf '%100s' | tr ' ' 'x')
cat >nginx/nginx.conf <<EOF
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
worker_processes 1;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $WORK/nginx/tmp;
	proxy_temp_path $WORK/nginx/tmp;
	fastcgi_temp_path $WORK/nginx/tmp;
	uwsgi_temp_path $WORK/nginx/tmp;
	scgi_temp_path $WORK/nginx/tmp;
	default_type text/plain;
	keepalive_requests 10000000;
	server {
		listen 127.0.0.1:$BACKEND ssl;
		ssl_certificate $WORK/backend.crt;
		ssl_certificate_key $WORK/backend.key;
		ssl_client_certificate $WORK/proxy-ca.crt;
		ssl_verify_client on;
		ssl_session_tickets off;
		ssl_session_cache off;
		location / { return 200 "$BODY"; }
	}
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
wait_port "$BACKEND"

# --- Caddy front: the two transports side by side ---------------------------
free_port STD
free_port MTLS
free_port STDN
free_port MTLSN
site() { # port transport-block
	cat <<EOF
https://127.0.0.1:$1 {
	tls $WORK/front.crt $WORK/front.key
	reverse_proxy https://127.0.0.1:$BACKEND {
$2
	}
}
EOF
}
std_transport() {
	printf '\t\ttransport http {\n\t\t\ttls_client_auth %s %s\n\t\t\ttls_trust_pool file %s\n%s\t\t}' \
		"$WORK/proxy.crt" "$WORK/proxy.key" "$WORK/backend-ca.crt" "$1"
}
mtls_transport() {
	printf '\t\ttransport mtls {\n\t\t\tclient_identity pem %s %s\n\t\t\ttrust_pool file %s\n%s\t\t}' \
		"$WORK/proxy.crt" "$WORK/proxy.key" "$WORK/backend-ca.crt" "$1"
}
NOKA=$'\t\t\tkeepalive off\n'
{
	cat <<EOF
{
	admin off
	skip_install_trust
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
}
EOF
	site "$STD" "$(std_transport '')"
	site "$MTLS" "$(mtls_transport '')"
	site "$STDN" "$(std_transport "$NOKA")"
	site "$MTLSN" "$(mtls_transport "$NOKA")"
} >Caddyfile
HOME=$WORK XDG_DATA_HOME=$WORK/data XDG_CONFIG_HOME=$WORK/config \
	"$CADDY" run --config Caddyfile --adapter caddyfile >caddy.log 2>&1 &
PIDS+=($!)
for p in "$STD" "$MTLS" "$STDN" "$MTLSN"; do wait_port "$p"; done
for p in "$STD" "$MTLS" "$STDN" "$MTLSN"; do
	got=$(curl -sk "https://127.0.0.1:$p/")
	[ "$got" = "$BODY" ] || { echo "front :$p answered '$got'" >&2; cat caddy.log >&2; exit 1; }
done

# --- runs ---------------------------------------------------------------------
rps() { # port -> req/s
	wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "https://127.0.0.1:$1/" >/dev/null
	wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "https://127.0.0.1:$1/" |
		awk '/Requests\/sec:/ {print $2} /Non-2xx|Socket errors/ {print "ERRORS: " $0 > "/dev/stderr"}'
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "bench-upstream: $ROUNDS interleaved rounds, wrk -t$THREADS -c$CONNS, ${DURATION} after ${WARMUP} warm-up, $(nproc) CPUs"
for w in $WORKLOADS; do
	case $w in
	W3) a=$STD b=$MTLS desc="keep-alive upstream connections (W3)" ;;
	W3N) a=$STDN b=$MTLSN desc="a new upstream TLS connection per request (W3N, full handshakes)" ;;
	*) echo "unknown workload $w" >&2; exit 1 ;;
	esac
	: >"std.$w"
	: >"mtls.$w"
	for r in $(seq "$ROUNDS"); do
		s=$(rps "$a")
		m=$(rps "$b")
		echo "$s" >>"std.$w"
		echo "$m" >>"mtls.$w"
		printf '  %s round %d: http transport %10.1f req/s   mtls transport %10.1f req/s   ratio %.3f\n' "$w" "$r" "$s" "$m" "$(awk -v a="$m" -v b="$s" 'BEGIN {print a / b}')"
	done
	ms=$(median <"std.$w")
	mm=$(median <"mtls.$w")
	printf '%s %s\n  median: http transport (tls_client_auth PEM) %.1f req/s, mtls transport (client_identity pem) %.1f req/s, ratio %.3f\n' \
		"$w" "$desc" "$ms" "$mm" "$(awk -v a="$mm" -v b="$ms" 'BEGIN {print a / b}')"
done
