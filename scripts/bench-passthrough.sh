#!/usr/bin/env bash
# bench-passthrough.sh: SNI passthrough throughput and connection rate, on
# 127.0.0.1, for five paths to the same nginx origin:
#
#   direct   wrk -> nginx (HTTPS origin)
#   haproxy  wrk -> HAProxy 2.6 mode tcp, req_ssl_sni routing -> nginx
#   nginx    wrk -> nginx 1.22 stream, ssl_preread on, a map of
#            $ssl_preread_server_name to upstreams -> nginx (a second nginx
#            process with 1 worker, so the origin keeps its own worker)
#   caddy-l4 wrk -> Caddy + caddy-l4 listener wrapper (tls matcher, proxy
#            handler), beside a Caddy site -> nginx
#   go-floor wrk -> integration/bench/goproxy -> nginx: the least a Go
#            proxy does per connection (accept, dial, io.Copy both ways; no
#            SNI routing: one port per origin, no logs, no metrics), so
#            the suite reads as Go's floor plus its own work
#   suite    wrk -> Caddy + the suite's passthrough block, beside a Caddy
#            site -> nginx
#
# Workloads (see docs/benchmarks.md for the method and the goals):
#   W1   1 MiB responses, keep-alive (MiB/s)
#   W2   100-byte responses, one new connection per request, full TLS 1.3
#        handshakes (session tickets and cache off at the origin) (conn/s)
#   W2R  W2 with resumed TLS 1.3 handshakes (session tickets on) (conn/s)
#   W3   W2 with one connection at a time: the added time per new
#        connection, and the added time to the first byte (wrk's p50, from
#        the request on the new connection to the response)
#
# Full and resumed handshakes. wrk keeps its TLS session across reconnects,
# so whether a Connection: close run resumes is up to the origin. The
# origin nginx has two server blocks (one process, one worker): the one
# for "localhost" with tickets and session cache off (W1, W2, W3) and one
# for "resume.localhost" with tickets on (W2R), on two ports. Every proxy
# routes both names on its one port, by SNI, each to its block. Nothing is
# reloaded between workloads, so no run can meet a half-reloaded origin.
# wrk sends the URL's host as SNI; a small Lua script makes it connect to
# 127.0.0.1 whatever the name (resume.localhost need not resolve).
# The sanity check proves it: through every path, a second connection to
# "localhost" makes a full handshake and one to "resume.localhost" is
# resumed (openssl s_client -sess_out/-sess_in), and a short wrk run of
# each workload is logged by the origin (only requests carrying the header
# X-Bench-Sanity: 1 are logged): W2 and W3 runs must show no resumed
# handshake, W2R runs at least 90%.
#
# Besides rates, the script reads each proxy's CPU time from /proc (ms per
# GiB in W1, us per connection in W2 and W2R; for nginx its worker), which
# a busy shared machine disturbs much less than it disturbs rates.
#
# Rounds are interleaved (every path once per round and workload), medians
# reported, ratios to direct and to nginx, then the project's goals
# (docs/benchmarks.md), in two groups: W1 >= 0.90x direct; W2 >= nginx and
# <= 150 us added per connection (from W3: 1/rate through the suite -
# 1/rate direct, at c=1); W2R >= nginx; then W1 >= HAProxy, W2 >= 0.90x
# HAProxy, added time to first byte (W3 p50) < 200 us.
#
# Usage: scripts/bench-passthrough.sh
# Environment: ROUNDS (3), DURATION (10s), WARMUP (2s), CONNS (16),
#              THREADS (1), WORKLOADS ("W1 W2 W2R W3"), CADDY (a prebuilt
#              trustline-caddy; else built from this checkout), KEEP=1
#              keeps the work dir, HOLD=1 starts everything and waits.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
WORKLOADS=${WORKLOADS:-"W1 W2 W2R W3"}
read -r -a workloads <<<"$WORKLOADS"
for w in "${workloads[@]}"; do
	case $w in W1 | W2 | W2R | W3) ;; *) echo "bench-passthrough: unknown workload $w (W1, W2, W2R, W3)" >&2; exit 1 ;; esac
done
has() { [[ " ${workloads[*]} " == *" $1 "* ]]; }

export PATH="$PATH:/usr/sbin"
. "$(dirname "$0")/bench-lib.sh"
need_tools wrk nginx haproxy openssl curl ps
bench_init bench-passthrough

# origin: "localhost", tickets off (W1, W2, W3); origin_r: "resume.localhost", tickets on (W2R)
read -r origin origin_r hap ngx vanilla suite gof gof_r <<<"$(free_ports 8)"

# origin: nginx with its own certificate for both names
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,DNS:resume.localhost \
	-keyout origin.key -out origin.crt 2>/dev/null
mkdir -p www origin nginx
head -c $((1 << 20)) /dev/urandom >www/1m
head -c 100 /dev/urandom >www/small
nginx_head origin >origin/nginx.conf
cat >>origin/nginx.conf <<EOF
http {
	sendfile on;
	keepalive_requests 1000000;
	client_body_temp_path $work/origin;
	proxy_temp_path $work/origin;
	fastcgi_temp_path $work/origin;
	uwsgi_temp_path $work/origin;
	scgi_temp_path $work/origin;
	# only the sanity runs (header X-Bench-Sanity: 1) are logged: whether
	# their handshakes were resumed
	map \$http_x_bench_sanity \$sanity { default 0; 1 1; }
	log_format sanity '\$server_port \$ssl_protocol \$ssl_session_reused';
	access_log $work/origin/sanity.log sanity if=\$sanity;
	ssl_certificate $work/origin.crt;
	ssl_certificate_key $work/origin.key;
	ssl_protocols TLSv1.3;
	server {
		# W1, W2, W3: full handshakes
		listen 127.0.0.1:$origin ssl;
		server_name localhost;
		ssl_session_tickets off;
		ssl_session_cache off;
		root $work/www;
	}
	server {
		# W2R: resumed handshakes (TLS 1.3 tickets)
		listen 127.0.0.1:$origin_r ssl;
		server_name resume.localhost;
		ssl_session_tickets on;
		ssl_session_cache off;
		root $work/www;
	}
}
EOF
nginx -p "$work/origin" -c "$work/origin/nginx.conf" &
pids+=($!)

cat >haproxy.cfg <<EOF
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
	use_backend origin_r if { req_ssl_sni -i resume.localhost }
backend origin
	server o1 127.0.0.1:$origin
backend origin_r
	server o1 127.0.0.1:$origin_r
EOF
haproxy -db -f haproxy.cfg >haproxy.log 2>&1 &
pids+=($!)

nginx_head nginx stream >nginx/nginx.conf
cat >>nginx/nginx.conf <<EOF
stream {
	map \$ssl_preread_server_name \$backend {
		localhost        origin;
		resume.localhost origin_r;
	}
	upstream origin {
		server 127.0.0.1:$origin;
	}
	upstream origin_r {
		server 127.0.0.1:$origin_r;
	}
	server {
		listen 127.0.0.1:$ngx;
		ssl_preread on;
		proxy_pass \$backend;
	}
}
EOF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)

# Both Caddy configs: a Caddy site on the port (so passthrough is a
# listener wrapper in front of an HTTP server, the real setup), HTTP/3
# off, logs to a file.
caddy_run() { # name port caddyfile
	local dir="$work/$1"
	mkdir -p "$dir"
	printf '%s\n' "$3" >"$dir/Caddyfile"
	HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
		"$CADDY" run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/log" 2>&1 &
	pids+=($!)
}
caddy_run caddy-l4 "$vanilla" "{
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
				@rs tls sni resume.localhost
				route @rs {
					proxy 127.0.0.1:$origin_r
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
		resume.localhost 127.0.0.1:$origin_r
	}
}"

# Go's floor: a plain TCP proxy per origin (no SNI to route by)
(cd "$repo" && go build -o "$work/goproxy" ./integration/bench/goproxy)
"$work/goproxy" "127.0.0.1:$gof=127.0.0.1:$origin" "127.0.0.1:$gof_r=127.0.0.1:$origin_r" >goproxy.log 2>&1 &
pids+=($!)

for p in $origin $origin_r $hap $ngx $vanilla $suite $gof $gof_r; do wait_port "$p"; done

paths=(direct haproxy nginx caddy-l4 go-floor suite)
declare -A port=([direct]=$origin [haproxy]=$hap [nginx]=$ngx [caddy-l4]=$vanilla [go-floor]=$gof [suite]=$suite)
# The proxy processes, for their CPU use (direct has none).
declare -A proc=([haproxy]=${pids[1]} [nginx]=${pids[2]} [caddy-l4]=${pids[3]} [suite]=${pids[4]} [go-floor]=${pids[5]})
declare -A logs=([direct]="" [haproxy]=$work/haproxy.log [nginx]=$work/nginx/error.log
	[caddy-l4]=$work/caddy-l4/log [go-floor]=$work/goproxy.log [suite]=$work/suite/log)

addr() { # path workload: host:port wrk and curl use (SNI resume.localhost for W2R)
	if [[ $2 == W2R ]]; then
		case $1 in
		direct) echo "resume.localhost:$origin_r" ;;
		go-floor) echo "resume.localhost:$gof_r" ;;
		*) echo "resume.localhost:${port[$1]}" ;;
		esac
	else
		echo "localhost:${port[$1]}"
	fi
}
if [[ "${HOLD:-}" == 1 ]]; then
	for p in "${paths[@]}"; do echo "$p https://$(addr "$p" W1)/1m https://$(addr "$p" W2R)/small (resolve to 127.0.0.1)"; done
	echo "pids: ${pids[*]} (origin haproxy nginx caddy-l4 suite go-floor); Ctrl-C to stop"
	sleep infinity &
	pids+=($!)
	wait $!
fi

# wrk sends the URL's host as SNI (and Host); connect to 127.0.0.1 always
cat >resolve.lua <<'EOF'
function wrk.resolve(host, service)
	wrk.addrs = wrk.lookup("127.0.0.1", service)
end
EOF
run_wrk() { # path workload duration [extra wrk args...]
	local url w=$2 d=$3
	url="https://$(addr "$1" "$2")"
	shift 3
	case $w in
	W1) wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency -s resolve.lua "$@" "$url/1m" ;;
	W2 | W2R) wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency -s resolve.lua -H "Connection: close" "$@" "$url/small" ;;
	W3) wrk -t1 -c1 -d"$d" --latency -s resolve.lua -H "Connection: close" "$@" "$url/small" ;;
	esac
}

# --- sanity: every path works, and resumes exactly where it should --------
for p in "${paths[@]}"; do
	for w in W1 W2R; do
		a=$(addr "$p" "$w")
		f=1m
		[[ $w == W2R ]] && f=small
		curl -sSk --resolve "$a:127.0.0.1" "https://$a/$f" -o got 2>curl.err ||
			fail "$p ($w): curl failed: $(tail -n 3 curl.err)" "${logs[$p]}" origin/error.log
		cmp -s got "www/$f" || fail "$p ($w): the body differs from the origin's $f" "${logs[$p]}"
	done
done
client_leg() { # path workload: "resumed" if a second connection resumes the first one's session, else "full"
	local a host req
	a=$(addr "$1" "$2")
	host=${a%:*}
	req="GET /small HTTP/1.1\r\nHost: $host\r\nConnection: close\r\n\r\n"
	rm -f client.sess
	printf %b "$req" | timeout 10 openssl s_client -connect "127.0.0.1:${a##*:}" -servername "$host" \
		-sess_out client.sess -ign_eof >/dev/null 2>&1 || true
	printf %b "$req" | timeout 10 openssl s_client -connect "127.0.0.1:${a##*:}" -servername "$host" \
		-sess_in client.sess -ign_eof 2>/dev/null | grep -q '^Reused' && echo resumed || echo full
}
for p in "${paths[@]}"; do
	[[ $(client_leg "$p" W2) == full ]] || fail "$p: a connection for localhost resumed (W2 must be full handshakes)" "${logs[$p]}"
	[[ $(client_leg "$p" W2R) == resumed ]] || fail "$p: a connection for resume.localhost was not resumed (W2R)" "${logs[$p]}"
done
for w in "${workloads[@]}"; do
	for p in "${paths[@]}"; do
		before=$(wc -l <origin/sanity.log)
		check_wrk "$p" "$w" "$(run_wrk "$p" "$w" 1s -H 'X-Bench-Sanity: 1')"
		sleep 0.1 # nginx logs just after the last response
		# the share of resumed handshakes the origin saw in that run
		reused=$(tail -n +$((before + 1)) origin/sanity.log | awk '{n++; if ($3 == "r") r++} END{printf "%.0f", n ? 100*r/n : 0}')
		case $w in
		W2 | W3) [[ $reused == 0 ]] || fail "$p $w: ${reused}% of the handshakes were resumed (want full handshakes)" ;;
		W2R) ((reused >= 90)) || fail "$p W2R: only ${reused}% of the handshakes were resumed (want >= 90%)" ;;
		esac
	done
done
echo "sanity: every path serves both names, W2/W3 make full handshakes, W2R resumed ones" >&2

# --- measuring ---------------------------------------------------------------
hz=$(getconf CLK_TCK)

declare -A results
for r in $(seq 1 "$ROUNDS"); do
	for w in "${workloads[@]}"; do
		for p in "${paths[@]}"; do
			measure "$r" "$p" "$w"
			reqs=$(awk '/requests in/{print $1}' <<<"$out")
			read_mib=$(to_mib "$(awk '/requests in/{print $(NF-1)}' <<<"$out")")
			if [[ $w == W1 ]]; then
				v=$(to_mib "$(awk '/Transfer\/sec/{print $2}' <<<"$out")")
				# proxy CPU in ms per GiB moved
				cpu=$(awk -v t="$cpu_ticks" -v hz="$hz" -v m="$read_mib" 'BEGIN{printf "%.0f", t*1000/hz/(m/1024)}')
			else
				v=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
				# proxy CPU in microseconds per connection
				cpu=$(awk -v t="$cpu_ticks" -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.0f", t*1000000/hz/n}')
			fi
			lat=$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")
			results[$w,$p]+="$v "
			results[$w,$p,lat]+="$lat "
			results[$w,$p,cpu]+="$cpu "
			echo "round $r $w $p: $v (p50 ${lat}us, proxy cpu $cpu)" >&2
		done
	done
done

med() { median "${results[$1]}"; } # key
added_us() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", 1e6/a-1e6/b}'; } # rate rate-direct: us per connection
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN{ok = (op == ">=") ? x >= t : x <= t; print ok ? "met" : "NOT met"}'; }

echo
echo "SNI passthrough on 127.0.0.1, $ROUNDS interleaved rounds of $DURATION after $WARMUP warm-up, medians, $(nproc) CPUs"
! has W1 || echo "W1:  1 MiB responses, keep-alive, wrk -t$THREADS -c$CONNS (MiB/s; proxy CPU ms per GiB)"
! has W2 || echo "W2:  100 B responses, new connection per request, full TLS 1.3 handshakes, wrk -t$THREADS -c$CONNS (conn/s; proxy CPU us per connection)"
! has W2R || echo "W2R: 100 B responses, new connection per request, resumed TLS 1.3 handshakes (session tickets), wrk -t$THREADS -c$CONNS (conn/s; proxy CPU us per connection)"
! has W3 || echo "W3:  as W2 with one connection at a time, wrk -c1 (added time per new connection and to the first byte, p50)"
for w in "${workloads[@]}"; do
	echo
	d=$(med "$w,direct")
	n=$(med "$w,nginx")
	case $w in
	W1) unit=MiB/s cunit=ms/GiB ;;
	W2 | W2R) unit=conn/s cunit=us/conn ;;
	W3) unit=conn/s cunit="" ;;
	esac
	if [[ $w == W3 ]]; then
		printf '%-4s %-9s | %8s | %14s | %14s\n' "$w" path "$unit" "added per conn" "added p50 TTFB"
	else
		printf '%-4s %-9s | %8s | %8s | %8s | %s\n' "$w" path "$unit" "x direct" "x nginx" "proxy CPU"
	fi
	[[ $w == W3 ]] && dl=$(med "W3,direct,lat")
	for p in "${paths[@]}"; do
		v=$(med "$w,$p")
		if [[ $w == W3 ]]; then
			printf '%-4s %-9s | %8s | %11s us | %11s us\n' "$w" "$p" "$v" "$(added_us "$v" "$d")" \
				"$(awk -v a="$(med "W3,$p,lat")" -v b="$dl" 'BEGIN{printf "%.0f", a-b}')"
		else
			c="$(med "$w,$p,cpu") $cunit"
			[[ $p == direct ]] && c=-
			printf '%-4s %-9s | %8s | %8s | %8s | %s\n' "$w" "$p" "$v" "$(ratio "$v" "$d")" "$(ratio "$v" "$n")" "$c"
		fi
	done
done

echo
# target W BASELINE MIN: the suite's median rate in W over BASELINE's, against MIN
target() {
	has "$1" || return 0
	local x
	x=$(ratio "$(med "$1,suite")" "$(med "$1,$2")")
	printf '  %-3s suite/%s: %s (>= %s: %s)\n' "$1" "$2" "$x" "$3" "$(verdict "$x" '>=' "$3")"
}
echo "goals against direct and nginx (docs/benchmarks.md):"
target W1 direct 0.90
target W2 nginx 1.00
if has W3; then
	a=$(added_us "$(med W3,suite)" "$(med W3,direct)")
	echo "  W2  suite added time per connection (W3, c=1): ${a} us (<= 150 us: $(verdict "$a" '<=' 150));" \
		"nginx +$(added_us "$(med W3,nginx)" "$(med W3,direct)") us"
elif has W2; then
	echo "  W2  added time per connection: run W3 too"
fi
target W2R nginx 1.00
echo "goals against HAProxy and in latency (docs/benchmarks.md):"
target W1 haproxy 1.00
target W2 haproxy 0.90
if has W3; then
	a=$(awk -v a="$(med W3,suite,lat)" -v b="$(med W3,direct,lat)" 'BEGIN{printf "%.0f", a-b}')
	echo "  W3  suite added time to first byte, p50: ${a} us (< 200 us: $(verdict "$a" '<=' 199))"
fi
echo "Go's floor (go-floor, a bare io.Copy proxy), for reading the suite's gaps:"
for w in W2 W2R; do
	has "$w" || continue
	echo "  $w suite/go-floor: $(ratio "$(med "$w,suite")" "$(med "$w,go-floor")") conn/s;" \
		"proxy CPU per connection: suite $(med "$w,suite,cpu") us, go-floor $(med "$w,go-floor,cpu") us, nginx $(med "$w,nginx,cpu") us"
done
