#!/usr/bin/env bash
# bench-passthrough.sh: SNI passthrough throughput and connection rate, on
# 127.0.0.1, for four paths to the same nginx origin:
#
#   direct   wrk -> nginx (HTTPS origin)
#   haproxy  wrk -> HAProxy 2.6 mode tcp, req_ssl_sni routing -> nginx
#   caddy-l4 wrk -> Caddy + caddy-l4 listener wrapper (tls matcher, proxy
#            handler), beside a Caddy site -> nginx
#   suite    wrk -> Caddy + the suite's passthrough block, beside a Caddy
#            site -> nginx
#
# Workloads (see ../shared/BENCHMARKS.md for the method):
#   W1  1 MiB responses, keep-alive (MiB/s)
#   W2  100-byte responses, one new connection per request, full TLS 1.3
#       handshakes (session tickets and cache off at the origin) (conn/s)
#   W3  W2 with one connection at a time: the added time per new
#       connection, and the added time to the first byte (wrk's p50, from
#       the request on the new connection to the response)
#
# Besides rates, the script reads each proxy's CPU time from /proc (ms per
# GiB in W1, us per connection in W2), which a busy shared machine
# disturbs much less than it disturbs rates.
#
# Rounds are interleaved (every path once per round), medians reported,
# ratios to direct. Environment: ROUNDS (3), DURATION (10s), WARMUP (2s),
# CONNS (16), THREADS (1), KEEP=1 keeps the work dir.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/bench-passthrough.XXXXXX)
chmod 755 "$work" # nginx workers run as nobody
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [[ "${KEEP:-}" == 1 ]]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || [[ -x "/usr/sbin/$1" ]] || { echo "missing: $1" >&2; exit 1; }; }
for tool in wrk nginx haproxy openssl go; do need "$tool"; done
export PATH="$PATH:/usr/sbin"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
waitport() {
	for _ in $(seq 1 200); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "port $1 did not open" >&2
	exit 1
}

origin=$(freeport); hap=$(freeport); vanilla=$(freeport); suite=$(freeport)

echo "building the suite..." >&2
(cd "$repo" && go build -o "$work/caddy" ./cmd/trustline-caddy)

# origin: nginx with its own certificate for "localhost"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost \
	-keyout "$work/origin.key" -out "$work/origin.crt" 2>/dev/null
mkdir -p "$work/www" "$work/nginx"
head -c $((1 << 20)) /dev/urandom >"$work/www/1m"
head -c 100 /dev/urandom >"$work/www/small"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
worker_processes 1;
events { worker_connections 4096; }
http {
	access_log off;
	sendfile on;
	keepalive_requests 1000000;
	client_body_temp_path $work/nginx;
	proxy_temp_path $work/nginx;
	fastcgi_temp_path $work/nginx;
	uwsgi_temp_path $work/nginx;
	scgi_temp_path $work/nginx;
	server {
		listen 127.0.0.1:$origin ssl;
		server_name localhost;
		ssl_certificate $work/origin.crt;
		ssl_certificate_key $work/origin.key;
		ssl_protocols TLSv1.3;
		ssl_session_tickets off;
		ssl_session_cache off;
		root $work/www;
	}
}
EOF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)

cat >"$work/haproxy.cfg" <<EOF
global
	maxconn 4096
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend fe
	bind 127.0.0.1:$hap
	tcp-request inspect-delay 5s
	tcp-request content accept if { req_ssl_hello_type 1 }
	use_backend origin if { req_ssl_sni -i localhost }
backend origin
	server o1 127.0.0.1:$origin
EOF
haproxy -db -f "$work/haproxy.cfg" &
pids+=($!)

# Both Caddy configs: a Caddy site on the port (so passthrough is a
# listener wrapper in front of an HTTP server, the real setup), HTTP/3
# off, logs to a file.
caddy_run() { # name port caddyfile
	local dir="$work/$1"
	mkdir -p "$dir"
	printf '%s\n' "$3" >"$dir/Caddyfile"
	HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
		"$work/caddy" run --config "$dir/Caddyfile" --adapter caddyfile 2>"$dir/log" &
	pids+=($!)
}
caddy_run vanilla "$vanilla" "{
	admin off
	skip_install_trust
	auto_https disable_redirects
	servers :$vanilla {
		protocols h1 h2
		listener_wrappers {
			layer4 {
				@pt tls sni localhost
				route @pt {
					proxy 127.0.0.1:$origin
				}
			}
			tls
		}
	}
}
https://site.internal:$vanilla {
	tls internal
	respond caddy
}"
caddy_run suite "$suite" "{
	admin off
	skip_install_trust
	auto_https disable_redirects
	servers :$suite {
		protocols h1 h2
	}
}
https://site.internal:$suite {
	tls internal
	respond caddy
	passthrough {
		localhost 127.0.0.1:$origin
	}
}"

for p in $origin $hap $vanilla $suite; do waitport "$p"; done
sleep 1

declare -A port=([direct]=$origin [haproxy]=$hap [caddy-l4]=$vanilla [suite]=$suite)
paths=(direct haproxy caddy-l4 suite)
if [[ "${HOLD:-}" == 1 ]]; then
	for p in "${paths[@]}"; do echo "$p https://localhost:${port[$p]}/1m"; done
	echo "pids: ${pids[*]} (nginx haproxy caddy-l4 suite); Ctrl-C to stop"
	sleep infinity &
	wait $!
fi

# The proxy processes, for their CPU use (direct has none).
declare -A proc=([haproxy]=${pids[1]} [caddy-l4]=${pids[2]} [suite]=${pids[3]})
ticks() { # utime+stime of a pid, in clock ticks
	[[ -n "${1:-}" ]] && awk '{print $14+$15}' "/proc/$1/stat" || echo 0
}
hz=$(getconf CLK_TCK)

# wrk prints "Requests/sec: N", "N requests in Ds, X read" and, with
# --latency, the 50% latency.
to_mib() { # 12.3MB / 800.1KB / 1.2GB -> MiB
	awk -v v="$1" 'BEGIN{n=v+0; u=substr(v,length(v)-1); if(u=="GB")n*=1024; else if(u=="KB")n/=1024; else if(u!="MB")n/=1048576; printf "%.1f", n}'
}
to_us() { # 1.23ms / 456.00us / 1.2s -> microseconds
	awk -v v="$1" 'BEGIN{n=v+0; if(v~/ms$/)n*=1000; else if(v~/us$/)n*=1; else if(v~/s$/)n*=1000000; printf "%.0f", n}'
}
run_wrk() { # path workload duration
	local url="https://localhost:${port[$1]}"
	case $2 in
	W1) wrk -t"$THREADS" -c"$CONNS" -d"$3" --latency "$url/1m" ;;
	W2) wrk -t"$THREADS" -c"$CONNS" -d"$3" --latency -H "Connection: close" "$url/small" ;;
	W3) wrk -t1 -c1 -d"$3" --latency -H "Connection: close" "$url/small" ;;
	esac
}

declare -A results
workloads=(W1 W2 W3)
for w in "${workloads[@]}"; do
	for p in "${paths[@]}"; do
		out=$(run_wrk "$p" "$w" 2s)
		if ! grep -q "Requests/sec" <<<"$out" || grep -q "Non-2xx" <<<"$out"; then
			echo "sanity check failed for $p $w:" >&2
			echo "$out" >&2
			exit 1
		fi
	done
done
for r in $(seq 1 "$ROUNDS"); do
	for w in "${workloads[@]}"; do
		for p in "${paths[@]}"; do
			run_wrk "$p" "$w" "$WARMUP" >/dev/null
			t0=$(ticks "${proc[$p]:-}")
			out=$(run_wrk "$p" "$w" "$DURATION")
			t1=$(ticks "${proc[$p]:-}")
			if grep -q "errors:" <<<"$out"; then
				echo "round $r $w $p: $(grep 'errors:' <<<"$out")" >&2
			fi
			reqs=$(awk '/requests in/{print $1}' <<<"$out")
			read_mib=$(to_mib "$(awk '/requests in/{print $(NF-1)}' <<<"$out")")
			if [[ $w == W1 ]]; then
				v=$(to_mib "$(awk '/Transfer\/sec/{print $2}' <<<"$out")")
				# proxy CPU in ms per GiB moved
				cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v m="$read_mib" 'BEGIN{printf "%.0f", t*1000/hz/(m/1024)}')
			else
				v=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
				# proxy CPU in microseconds per connection
				cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.0f", t*1000000/hz/n}')
			fi
			lat=$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")
			results[$w,$p]+="$v "
			results[$w,$p,lat]+="$lat "
			results[$w,$p,cpu]+="$cpu "
			echo "round $r $w $p: $v (p50 ${lat}us, proxy cpu $cpu)" >&2
		done
	done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if(NR%2)print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

echo
echo "SNI passthrough on 127.0.0.1, $ROUNDS interleaved rounds of $DURATION, medians; ratios to direct"
echo "W1: 1 MiB responses, keep-alive, wrk -t$THREADS -c$CONNS (MiB/s; proxy CPU ms per GiB)"
echo "W2: 100 B responses, new connection per request, full TLS 1.3 handshakes, wrk -t$THREADS -c$CONNS (conn/s; proxy CPU us per connection)"
echo "W3: as W2 with one connection at a time, wrk -c1 (added time per new connection and to the first byte, p50)"
echo
printf '%-9s | %-28s | %-28s | %-28s\n' path W1 W2 W3
printf '%-9s-+-%-28s-+-%-28s-+-%-28s\n' --------- ---------------------------- ---------------------------- ----------------------------
d1=$(median "${results[W1,direct]}"); d2=$(median "${results[W2,direct]}"); d3=$(median "${results[W3,direct]}"); dl=$(median "${results[W3,direct,lat]}")
for p in "${paths[@]}"; do
	v1=$(median "${results[W1,$p]}"); v2=$(median "${results[W2,$p]}"); v3=$(median "${results[W3,$p]}"); l3=$(median "${results[W3,$p,lat]}")
	c1=$(median "${results[W1,$p,cpu]}"); c2=$(median "${results[W2,$p,cpu]}")
	[[ $p == direct ]] && c1=- && c2=-
	printf '%-9s | %7s (%4s) %5s ms/GiB | %6s (%4s) %5s us/conn | +%4sus/conn, p50 +%4sus\n' "$p" \
		"$v1" "$(ratio "$v1" "$d1")" "$c1" "$v2" "$(ratio "$v2" "$d2")" "$c2" \
		"$(awk -v a="$v3" -v b="$d3" 'BEGIN{printf "%.0f", 1e6/a-1e6/b}')" "$(awk -v a="$l3" -v b="$dl" 'BEGIN{printf "%.0f", a-b}')"
done
h1=$(median "${results[W1,haproxy]}"); h2=$(median "${results[W2,haproxy]}")
s1=$(median "${results[W1,suite]}"); s2=$(median "${results[W2,suite]}"); s3=$(median "${results[W3,suite,lat]}")
echo
echo "suite/direct  W1: $(ratio "$s1" "$d1") (target >= 0.90)"
echo "suite/haproxy W1: $(ratio "$s1" "$h1") (target >= 1.00)"
echo "suite/haproxy W2: $(ratio "$s2" "$h2") (target >= 0.90)"
echo "suite added time to first byte, p50: $(awk -v a="$s3" -v b="$dl" 'BEGIN{printf "%.0f", a-b}')us (target < 200us)"
