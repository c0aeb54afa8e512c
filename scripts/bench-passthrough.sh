#!/usr/bin/env bash
# bench-passthrough.sh: SNI passthrough throughput and connection rate for
# these paths to the same nginx origin:
#
#   direct       wrk -> nginx (HTTPS origin)
#   haproxy      wrk -> HAProxy 2.6 mode tcp, req_ssl_sni routing -> nginx
#   nginx        wrk -> nginx 1.22 stream, ssl_preread on, a map of
#                $ssl_preread_server_name to upstreams -> nginx (a second
#                nginx process with 1 worker, so the origin keeps its own)
#   caddy-l4     wrk -> Caddy + caddy-l4 listener wrapper (tls matcher,
#                proxy handler), beside a Caddy site -> nginx
#   go-floor     wrk -> integration/bench/goproxy -> nginx: the least a Go
#                proxy does per connection (accept, dial, io.Copy both
#                ways; no SNI routing: one port per origin, no logs, no
#                metrics), so the suite reads as Go's floor plus its work
#   suite        wrk -> Caddy + the suite's passthrough block, beside a
#                Caddy site (the listener wrapper) -> nginx
#   suite-l4     wrk -> Caddy, the suite's clienthello matcher and
#                passthrough handler in a layer4 route (no HTTP server)
#   suite-splice the suite (site form) with "copy":"splice": on loopback
#                the default copies through a buffer. With LINK=veth it is
#                suite-buffered ("copy":"buffered") instead, since the
#                default splices there. suite against it says which copy
#                wins on the link measured.
#   suite-base, suite-l4-base   with BASE=<a trustline-caddy binary>: both
#                forms of the suite run by that binary (e.g. built from
#                the commit before a change), in the same rounds
#
# PATHS="direct nginx caddy-l4 suite ..." measures a subset (direct and
# nginx are needed for the ratios to them).
#
# Links (LINK):
#   loopback  everything on 127.0.0.1 (the default; the reference numbers)
#   veth      what a network card sees: wrk, the proxies and the origin in
#             three network namespaces joined by veth pairs (MTU 1500);
#             the origin's segments leave it MTU-sized (TSO off, software
#             GSO) and are merged by GRO where the proxies receive them;
#             the proxies send through TSO. direct is routed through the
#             proxies' namespace. Needs root, ip and ethtool. Still one
#             machine: wrk and the origin share the CPUs with the proxy,
#             so the proxy's CPU per GiB is what carries over to a real
#             network card.
#
# Workloads (see docs/benchmarks.md for the method and the goals):
#   W1   1 MiB responses, keep-alive (MiB/s; p99)
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
# the path's address whatever the name (resume.localhost need not resolve).
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
# PROFILE=1 adds, before the rounds, what explains W1 and holds on a busy
# machine too, for caddy-l4 and the suite's paths: a 1 s Go execution
# trace in the middle of a W1 run (Caddy's admin /debug/pprof/trace, on a
# Unix socket), read with `go tool trace -pprof=syscall`: the time in the
# copy's system calls per MiB (reads or splice drains, writes or splice
# pumps); and, as root with perf, how often TCP pacing deferred the
# sending (hrtimer starts of tcp_pace_kick, system-wide) per MiB.
#
# Rounds are interleaved (every path once per round and workload), medians
# reported, ratios to direct and to nginx, then the project's goals
# (docs/benchmarks.md): W1 >= 0.90x direct; W2 >= nginx and <= 150 us
# added per connection (from W3: 1/rate through the suite - 1/rate direct,
# at c=1); W2R >= nginx; W1 >= HAProxy, W2 >= 0.90x HAProxy, added time to
# first byte (W3 p50) < 200 us; then W1 of both forms of the suite against
# caddy-l4 and HAProxy (rate and p99), which copy won on this link, and
# the suite against BASE.
#
# Usage: scripts/bench-passthrough.sh
#        ROUNDS=5 WORKLOADS=W1 scripts/bench-passthrough.sh   (W1 alone)
# Environment: ROUNDS (3), DURATION (10s), WARMUP (2s), CONNS (16),
#              THREADS (1), WORKLOADS ("W1 W2 W2R W3"), LINK (loopback),
#              PATHS (all), BASE (none), PROFILE (off), CADDY (a prebuilt
#              trustline-caddy; else built from this checkout), KEEP=1
#              keeps the work dir, HOLD=1 starts everything and waits.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
WORKLOADS=${WORKLOADS:-"W1 W2 W2R W3"}
LINK=${LINK:-loopback}
BASE=${BASE:-}
PROFILE=${PROFILE:-}
read -r -a workloads <<<"$WORKLOADS"
for w in "${workloads[@]}"; do
	case $w in W1 | W2 | W2R | W3) ;; *) echo "bench-passthrough: unknown workload $w (W1, W2, W2R, W3)" >&2; exit 1 ;; esac
done
has() { [[ " ${workloads[*]} " == *" $1 "* ]]; }

export PATH="$PATH:/usr/sbin"
. "$(dirname "$0")/bench-lib.sh"
need_tools wrk nginx haproxy openssl curl ps
[[ -z $BASE || -x $BASE ]] || fail "BASE=$BASE is not an executable"
bench_init bench-passthrough

# origin: "localhost", tickets off (W1, W2, W3); origin_r: "resume.localhost", tickets on (W2R)
read -r origin origin_r hap ngx vanilla suite suite_l4 suite_copy base base_l4 gof gof_r <<<"$(free_ports 12)"

# Where each side runs: the origin's and the proxies' addresses, and the
# command prefixes that put a process in the origin's, the proxies' or
# the client's network namespace (none on loopback).
in_org=() in_px=() in_cli=()
oip=127.0.0.1 pip=127.0.0.1
case $LINK in
loopback) ;;
veth)
	need_tools ip ethtool
	[[ $(id -u) == 0 ]] || fail "LINK=veth needs root (network namespaces)"
	ns=bpt$$
	oip=10.201.2.2 pip=10.201.1.1
	for n in cli px org; do
		ip netns add "$ns-$n" || fail "ip netns add $ns-$n failed"
		cleanups+=("ip netns del $ns-$n")
		ip -n "$ns-$n" link set lo up
	done
	ip link add "$ns-c0" netns "$ns-px" type veth peer name "$ns-c1" netns "$ns-cli"
	ip link add "$ns-o0" netns "$ns-px" type veth peer name "$ns-o1" netns "$ns-org"
	ip -n "$ns-px" addr add "$pip/24" dev "$ns-c0"
	ip -n "$ns-px" addr add 10.201.2.1/24 dev "$ns-o0"
	ip -n "$ns-cli" addr add 10.201.1.2/24 dev "$ns-c1"
	ip -n "$ns-org" addr add "$oip/24" dev "$ns-o1"
	for x in px:c0 px:o0 cli:c1 org:o1; do
		ip -n "$ns-${x%:*}" link set "$ns-${x#*:}" mtu 1500 up
	done
	ip -n "$ns-cli" route add default via "$pip"
	ip -n "$ns-org" route add default via 10.201.2.1
	ip netns exec "$ns-px" sysctl -qw net.ipv4.ip_forward=1
	# MTU-sized segments leave the origin, GRO merges them at the proxies
	ip netns exec "$ns-org" ethtool -K "$ns-o1" tso off gso on >/dev/null
	ip netns exec "$ns-px" ethtool -K "$ns-o0" gro on >/dev/null
	in_org=(ip netns exec "$ns-org") in_px=(ip netns exec "$ns-px") in_cli=(ip netns exec "$ns-cli")
	;;
*) fail "unknown LINK $LINK (loopback, veth)" ;;
esac

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
		listen $oip:$origin ssl;
		server_name localhost;
		ssl_session_tickets off;
		ssl_session_cache off;
		root $work/www;
	}
	server {
		# W2R: resumed handshakes (TLS 1.3 tickets)
		listen $oip:$origin_r ssl;
		server_name resume.localhost;
		ssl_session_tickets on;
		ssl_session_cache off;
		root $work/www;
	}
}
EOF
"${in_org[@]}" nginx -p "$work/origin" -c "$work/origin/nginx.conf" &
pids+=($!)

# The proxy processes, for their CPU use (direct has none).
declare -A proc

cat >haproxy.cfg <<EOF
global
	maxconn 4096
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend fe
	bind $pip:$hap
	tcp-request inspect-delay 5s
	tcp-request content accept if { req_ssl_hello_type 1 }
	use_backend origin if { req_ssl_sni -i localhost }
	use_backend origin_r if { req_ssl_sni -i resume.localhost }
backend origin
	server o1 $oip:$origin
backend origin_r
	server o1 $oip:$origin_r
EOF
"${in_px[@]}" haproxy -db -f haproxy.cfg >haproxy.log 2>&1 &
pids+=($!)
proc[haproxy]=$!

nginx_head nginx stream >nginx/nginx.conf
cat >>nginx/nginx.conf <<EOF
stream {
	map \$ssl_preread_server_name \$backend {
		localhost        origin;
		resume.localhost origin_r;
	}
	upstream origin {
		server $oip:$origin;
	}
	upstream origin_r {
		server $oip:$origin_r;
	}
	server {
		listen $pip:$ngx;
		ssl_preread on;
		proxy_pass \$backend;
	}
}
EOF
"${in_px[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
proc[nginx]=$!

# The Caddy configs, each in its own process: a Caddy site on the port (so
# passthrough is a listener wrapper in front of an HTTP server, the real
# setup) or a layer4 route; HTTP/3 off, logs to a file.
caddy_run() { # name caddyfile [binary [copy]]: with copy, set on the passthrough handler in the adapted JSON
	local dir="$work/$1" bin=${3:-$CADDY} conf
	mkdir -p "$dir"
	printf '%s\n' "$2" >"$dir/Caddyfile"
	# with PROFILE, the admin API (for its pprof endpoints) on a Unix socket
	[[ $PROFILE != 1 ]] || sed -i "s#^\tadmin off\$#\tadmin unix/$dir/admin.sock#" "$dir/Caddyfile"
	conf=(--config "$dir/Caddyfile" --adapter caddyfile)
	if [[ -n ${4:-} ]]; then
		HOME="$dir" "$bin" adapt --config "$dir/Caddyfile" --adapter caddyfile 2>/dev/null |
			sed 's/"handler":"passthrough"/&,"copy":"'"$4"'"/g' >"$dir/caddy.json"
		grep -q '"copy":"'"$4"'"' "$dir/caddy.json" || fail "$1: no passthrough handler to set copy on"
		conf=(--config "$dir/caddy.json")
	fi
	HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
		"${in_px[@]}" "$bin" run "${conf[@]}" >"$dir/log" 2>&1 &
	pids+=($!)
	proc[$1]=$!
}
site_conf() { # port: the suite's passthrough block beside a Caddy site
	echo "{
	admin off
	skip_install_trust
	auto_https disable_redirects
	servers :$1 {
		protocols h1 h2
	}
}
https://site.internal:$1 {
	tls internal
	respond caddy
	passthrough {
		localhost $oip:$origin
		resume.localhost $oip:$origin_r
	}
}"
}
l4_conf() { # port: the suite's handler in a layer4 route
	echo "{
	admin off
	skip_install_trust
	layer4 {
		$pip:$1 {
			@pt clienthello localhost
			route @pt {
				passthrough $oip:$origin
			}
			@rs clienthello resume.localhost
			route @rs {
				passthrough $oip:$origin_r
			}
		}
	}
}"
}
caddy_run caddy-l4 "{
	admin off
	skip_install_trust
	auto_https disable_redirects
	servers :$vanilla {
		protocols h1 h2
		listener_wrappers {
			layer4 {
				@pt tls sni localhost
				route @pt {
					proxy $oip:$origin
				}
				@rs tls sni resume.localhost
				route @rs {
					proxy $oip:$origin_r
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
caddy_run suite "$(site_conf "$suite")"
caddy_run suite-l4 "$(l4_conf "$suite_l4")"
# the copy the default does not choose on this link
copy_path=suite-splice copy_mode=splice
[[ $LINK == veth ]] && copy_path=suite-buffered copy_mode=buffered
caddy_run "$copy_path" "$(site_conf "$suite_copy")" "$CADDY" "$copy_mode"
if [[ -n $BASE ]]; then
	caddy_run suite-base "$(site_conf "$base")" "$BASE"
	caddy_run suite-l4-base "$(l4_conf "$base_l4")" "$BASE"
fi

# Go's floor: a plain TCP proxy per origin (no SNI to route by)
(cd "$repo" && go build -o "$work/goproxy" ./integration/bench/goproxy)
"${in_px[@]}" "$work/goproxy" "$pip:$gof=$oip:$origin" "$pip:$gof_r=$oip:$origin_r" >goproxy.log 2>&1 &
pids+=($!)
proc[go-floor]=$!

for p in $origin $origin_r; do wait_port "$p" "$oip" "${in_org[@]}"; done
for p in $hap $ngx $vanilla $suite $suite_l4 $suite_copy $gof $gof_r; do wait_port "$p" "$pip" "${in_px[@]}"; done
[[ -z $BASE ]] || for p in $base $base_l4; do wait_port "$p" "$pip" "${in_px[@]}"; done

all_paths=(direct haproxy nginx caddy-l4 go-floor suite suite-l4 "$copy_path")
[[ -z $BASE ]] || all_paths+=(suite-base suite-l4-base)
paths=("${all_paths[@]}")
if [[ -n ${PATHS:-} ]]; then
	paths=()
	for p in $PATHS; do
		[[ " ${all_paths[*]} " == *" $p "* ]] || fail "unknown path $p (${all_paths[*]})"
		paths+=("$p")
	done
fi
on() { [[ " ${paths[*]} " == *" $1 "* ]]; } # path: measured?
declare -A port=([direct]=$origin [haproxy]=$hap [nginx]=$ngx [caddy-l4]=$vanilla [go-floor]=$gof [suite]=$suite
	[suite-l4]=$suite_l4 [$copy_path]=$suite_copy [suite-base]=$base [suite-l4-base]=$base_l4)
declare -A logs=([direct]="" [haproxy]=$work/haproxy.log [nginx]=$work/nginx/error.log [go-floor]=$work/goproxy.log)
for p in caddy-l4 suite suite-l4 "$copy_path" suite-base suite-l4-base; do logs[$p]=$work/$p/log; done
ip_of() { if [[ $1 == direct ]]; then echo "$oip"; else echo "$pip"; fi; } # path: the address clients connect to

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
	for p in "${paths[@]}"; do echo "$p https://$(addr "$p" W1)/1m https://$(addr "$p" W2R)/small (resolve to $(ip_of "$p"))"; done
	[[ $LINK == loopback ]] || echo "clients run in: ${in_cli[*]}"
	echo "pids: ${pids[*]}; Ctrl-C to stop"
	sleep infinity &
	pids+=($!)
	wait $!
fi

# wrk sends the URL's host as SNI (and Host); connect to the path's address always
cat >resolve.lua <<'EOF'
function wrk.resolve(host, service)
	wrk.addrs = wrk.lookup(os.getenv("BENCH_IP"), service)
end
EOF
run_wrk() { # path workload duration [extra wrk args...]
	local url w=$2 d=$3 ip
	url="https://$(addr "$1" "$2")"
	ip=$(ip_of "$1")
	shift 3
	case $w in
	W1) BENCH_IP=$ip "${in_cli[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency -s resolve.lua "$@" "$url/1m" ;;
	W2 | W2R) BENCH_IP=$ip "${in_cli[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency -s resolve.lua -H "Connection: close" "$@" "$url/small" ;;
	W3) BENCH_IP=$ip "${in_cli[@]}" wrk -t1 -c1 -d"$d" --latency -s resolve.lua -H "Connection: close" "$@" "$url/small" ;;
	esac
}

# --- sanity: every path works, and resumes exactly where it should --------
for p in "${paths[@]}"; do
	for w in W1 W2R; do
		a=$(addr "$p" "$w")
		f=1m
		[[ $w == W2R ]] && f=small
		"${in_cli[@]}" curl -sSk --resolve "$a:$(ip_of "$p")" "https://$a/$f" -o got 2>curl.err ||
			fail "$p ($w): curl failed: $(tail -n 3 curl.err)" "${logs[$p]}" origin/error.log
		cmp -s got "www/$f" || fail "$p ($w): the body differs from the origin's $f" "${logs[$p]}"
	done
done
client_leg() { # path workload: "resumed" if a second connection resumes the first one's session, else "full"
	local a host req ip
	a=$(addr "$1" "$2")
	host=${a%:*}
	ip=$(ip_of "$1")
	req="GET /small HTTP/1.1\r\nHost: $host\r\nConnection: close\r\n\r\n"
	rm -f client.sess
	printf %b "$req" | timeout 10 "${in_cli[@]}" openssl s_client -connect "$ip:${a##*:}" -servername "$host" \
		-sess_out client.sess -ign_eof >/dev/null 2>&1 || true
	printf %b "$req" | timeout 10 "${in_cli[@]}" openssl s_client -connect "$ip:${a##*:}" -servername "$host" \
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

# --- profile: where the copy's time goes (PROFILE=1) -------------------------
pace_fn=$(awk '$3 == "tcp_pace_kick" {print $1; exit}' /proc/kallsyms 2>/dev/null || true)
if [[ $PROFILE == 1 ]]; then
	need_tools go
	can_pace=0
	[[ $(id -u) == 0 && -n $pace_fn && $pace_fn != 0000000000000000 ]] && command -v perf >/dev/null && can_pace=1
	echo
	echo "W1 profile: the copy's system-call time per MiB moved (Go execution trace, 1 s), TCP pacing deferrals per MiB"
	printf '%-14s | %8s | %-44s | %6s | %s\n' path MiB/s "the copy's system calls, ms per MiB" total "pacing timers per MiB"
	for p in caddy-l4 suite suite-l4 "$copy_path" suite-base suite-l4-base; do
		on "$p" || continue
		run_wrk "$p" W1 4s >"$p.profile.wrk" &
		wrk_pid=$!
		sleep 1.5
		pace=-
		if ((can_pace)); then
			perf stat -x, -a -e timer:hrtimer_start --filter "function == 0x$pace_fn" -- sleep 1 2>"$p.pace" &
			pace_pid=$!
		fi
		curl -s --unix-socket "$work/$p/admin.sock" -o "$p.trace" "http://localhost/debug/pprof/trace?seconds=1" ||
			fail "$p: no execution trace from the admin API" "${logs[$p]}"
		((can_pace)) && wait "$pace_pid" && pace=$(awk -F, '/hrtimer_start/{print $1}' "$p.pace")
		wait "$wrk_pid"
		rate=$(to_mib "$(awk '/Transfer\/sec/{print $2}' "$p.profile.wrk")")
		go tool trace -pprof=syscall "$p.trace" >"$p.syscall.pprof" 2>/dev/null
		# cumulative time per function: the copy's four system calls
		go tool pprof -top -cum -nodecount=200 "$p.syscall.pprof" 2>/dev/null |
			awk -v r="$rate" -v pace="$pace" -v p="$p" '
				function ms(v) { if (v ~ /ms$/) return v+0; if (v ~ /us$/) return (v+0)/1000; if (v ~ /s$/) return (v+0)*1000; return v+0 }
				$NF == "internal/poll.spliceDrain" { d = ms($4) } $NF == "internal/poll.splicePump" { u = ms($4) }
				$NF == "internal/poll.(*FD).Read" { rd = ms($4) } $NF == "internal/poll.(*FD).Write" { wr = ms($4) }
				END {
					calls = sprintf("read %.2f, write %.2f, drain %.2f, pump %.2f", rd/r, wr/r, d/r, u/r)
					printf "%-14s | %8.0f | %-44s | %6.2f | %s\n", p, r, calls, (rd+wr+d+u)/r, (pace == "-") ? "- (needs root and perf)" : sprintf("%.1f", pace/r)
				}'
	done
fi

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
			lat=$(wrk_pct "$out" 50%)
			p99=$(wrk_pct "$out" 99%)
			results[$w,$p]+="$v "
			results[$w,$p,lat]+="$lat "
			results[$w,$p,p99]+="$p99 "
			results[$w,$p,cpu]+="$cpu "
			echo "round $r $w $p: $v (p50 ${lat}us, p99 ${p99}us, proxy cpu $cpu)" >&2
		done
	done
done

med() { [[ -z ${results[$1]:-} ]] || median "${results[$1]}"; } # key: the median, empty when not measured
rat() { [[ -n $1 && -n $2 ]] && ratio "$1" "$2" || echo -; } # a b: a/b, or - when one is missing
added_us() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", 1e6/a-1e6/b}'; } # rate rate-direct: us per connection
verdict() { awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN{ok = (op == ">=") ? x >= t : x <= t; print ok ? "met" : "NOT met"}'; }

echo
echo "SNI passthrough over $LINK ($(uname -sr), $(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo '?') congestion control), $ROUNDS interleaved rounds of $DURATION after $WARMUP warm-up, medians, $(nproc) CPUs"
! has W1 || echo "W1:  1 MiB responses, keep-alive, wrk -t$THREADS -c$CONNS (MiB/s; latency p99; proxy CPU ms per GiB)"
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
		printf '%-4s %-14s | %8s | %14s | %14s\n' "$w" path "$unit" "added per conn" "added p50 TTFB"
	else
		printf '%-4s %-14s | %8s | %8s | %8s | %9s | %s\n' "$w" path "$unit" "x direct" "x nginx" "p99" "proxy CPU"
	fi
	dl=$(med "W3,direct,lat")
	for p in "${paths[@]}"; do
		v=$(med "$w,$p")
		if [[ $w == W3 ]]; then
			if [[ -n $d && $p != direct ]]; then
				printf '%-4s %-14s | %8s | %11s us | %11s us\n' "$w" "$p" "$v" "$(added_us "$v" "$d")" \
					"$(awk -v a="$(med "W3,$p,lat")" -v b="$dl" 'BEGIN{printf "%.0f", a-b}')"
			else
				printf '%-4s %-14s | %8s | %14s | %14s\n' "$w" "$p" "$v" - -
			fi
		else
			c="$(med "$w,$p,cpu") $cunit"
			[[ $p == direct ]] && c=-
			printf '%-4s %-14s | %8s | %8s | %8s | %6s ms | %s\n' "$w" "$p" "$v" "$(rat "$v" "$d")" "$(rat "$v" "$n")" \
				"$(awk -v u="$(med "$w,$p,p99")" 'BEGIN{printf "%.1f", u/1000}')" "$c"
		fi
	done
done

echo
# target W PATH BASELINE MIN: PATH's median rate in W over BASELINE's, against MIN
target() {
	has "$1" && on "$2" && on "$3" || return 0
	local x
	x=$(ratio "$(med "$1,$2")" "$(med "$1,$3")")
	printf '  %-3s %s/%s: %s (>= %s: %s)\n' "$1" "$2" "$3" "$x" "$4" "$(verdict "$x" '>=' "$4")"
}
# tail W PATH BASELINE: PATH's median p99 against BASELINE's (no worse: at most 1.10x, the noise of a few rounds)
tail_vs() {
	has "$1" && on "$2" && on "$3" || return 0
	local a b
	a=$(med "$1,$2,p99") b=$(med "$1,$3,p99")
	printf '  %-3s p99 %s %.1f ms, %s %.1f ms: %s\n' "$1" "$2" "$(awk -v u="$a" 'BEGIN{print u/1000}')" "$3" \
		"$(awk -v u="$b" 'BEGIN{print u/1000}')" "$(verdict "$(ratio "$a" "$b")" '<=' 1.10)"
}
echo "goals against direct and nginx (docs/benchmarks.md):"
target W1 suite direct 0.90
target W2 suite nginx 1.00
if has W3 && on suite && on direct; then
	a=$(added_us "$(med W3,suite)" "$(med W3,direct)")
	echo "  W2  suite added time per connection (W3, c=1): ${a} us (<= 150 us: $(verdict "$a" '<=' 150));" \
		"nginx +$(added_us "$(med W3,nginx)" "$(med W3,direct)") us"
elif has W2; then
	echo "  W2  added time per connection: run W3 too"
fi
target W2R suite nginx 1.00
echo "goals against HAProxy and in latency (docs/benchmarks.md):"
target W1 suite haproxy 1.00
target W2 suite haproxy 0.90
if has W3 && on suite && on direct; then
	a=$(awk -v a="$(med W3,suite,lat)" -v b="$(med W3,direct,lat)" 'BEGIN{printf "%.0f", a-b}')
	echo "  W3  suite added time to first byte, p50: ${a} us (< 200 us: $(verdict "$a" '<=' 199))"
fi
if has W1; then
	echo "W1, both forms of the suite against the proxy they build on and HAProxy (rate >= 1.00, p99 no worse):"
	for p in suite suite-l4; do
		target W1 "$p" caddy-l4 1.00
		target W1 "$p" haproxy 1.00
		tail_vs W1 "$p" caddy-l4
		tail_vs W1 "$p" haproxy
	done
	if on suite && on "$copy_path"; then
		def=buffered
		[[ $LINK == veth ]] && def=splice
		echo "W1, the copy on $LINK (the default, suite, copies $def here; $copy_path forces $copy_mode):"
		printf '  %s %s MiB/s, p99 %.1f ms, proxy CPU %s ms/GiB; %s %s MiB/s, p99 %.1f ms, proxy CPU %s ms/GiB: %s wins (rate %s)\n' \
			"$def" "$(med W1,suite)" "$(awk -v u="$(med W1,suite,p99)" 'BEGIN{print u/1000}')" "$(med W1,suite,cpu)" \
			"$copy_mode" "$(med "W1,$copy_path")" "$(awk -v u="$(med "W1,$copy_path,p99")" 'BEGIN{print u/1000}')" "$(med "W1,$copy_path,cpu")" \
			"$(awk -v a="$(med W1,suite)" -v b="$(med "W1,$copy_path")" -v x="$def" -v y="$copy_mode" 'BEGIN{print (a >= b) ? x : y}')" \
			"$(ratio "$(med W1,suite)" "$(med "W1,$copy_path")")"
	fi
fi
if [[ -n $BASE ]]; then
	echo "against BASE ($BASE), same rounds (within noise: 0.90-1.10 over 3 rounds, tighter with more):"
	for w in "${workloads[@]}"; do
		[[ $w == W3 ]] && continue
		for p in suite suite-l4; do
			on "$p" && on "$p-base" || continue
			printf '  %-3s %s/%s: %s, proxy CPU %s vs %s\n' "$w" "$p" "$p-base" "$(ratio "$(med "$w,$p")" "$(med "$w,$p-base")")" \
				"$(med "$w,$p,cpu")" "$(med "$w,$p-base,cpu")"
		done
	done
fi
echo "Go's floor (go-floor, a bare io.Copy proxy), for reading the suite's gaps:"
for w in W2 W2R; do
	has "$w" && on suite && on go-floor && on nginx || continue
	echo "  $w suite/go-floor: $(ratio "$(med "$w,suite")" "$(med "$w,go-floor")") conn/s;" \
		"proxy CPU per connection: suite $(med "$w,suite,cpu") us, go-floor $(med "$w,go-floor,cpu") us, nginx $(med "$w,nginx,cpu") us"
done
