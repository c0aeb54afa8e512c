#!/usr/bin/env bash
# bench-l4-mtls.sh: "mTLS out at layer 4" (workload W4 of
# docs/benchmarks.md): each proxy terminates the client's TLS, then
# re-encrypts the bytes, unparsed, to an origin that requires a client
# certificate, presenting its own. On 127.0.0.1, five paths:
#
#   direct   wrk -> nginx origin, a server block that asks for no client
#            certificate (the anchor: "no client cert")
#   haproxy  wrk -> HAProxy 2.6 mode tcp (bind ... ssl crt; server ... ssl
#            crt <client pem> ca-file <ca> verify required) -> origin (mTLS)
#   nginx    wrk -> nginx 1.22 stream (listen ... ssl; proxy_ssl on,
#            proxy_ssl_certificate, proxy_ssl_verify on,
#            proxy_ssl_session_reuse on) -> origin (mTLS)
#   caddy-l4 wrk -> Caddy, layer4 app: caddy-l4's tls handler, then
#            caddy-l4's proxy (tls, tls_client_auth, tls_trust_pool,
#            tls_server_name) -> origin (mTLS)
#   suite    wrk -> Caddy, layer4 app: the suite's terminate_tls handler,
#            then its passthrough handler with tls { client_identity pem,
#            trust_pool file, server_name } -> origin (mTLS)
#
# The origin is one nginx (1 worker, TLS 1.3, keepalive_requests raised)
# answering every request with the same 100-byte body on two ports: one
# with ssl_verify_client on against the test CA (the proxies' upstream),
# one without (direct). Every proxy presents a client certificate from
# that CA and verifies the origin's certificate (name "localhost") against
# it. The proxies' nginx is a second nginx process with 1 worker; HAProxy
# and Caddy run with their defaults (HAProxy's threads, GOMAXPROCS) as in
# bench-passthrough.sh. The two Caddy paths are separate processes; each
# has a small HTTP site whose only job is to load the front certificate
# into Caddy's tls app, where caddy-l4's tls handler looks for it (ALPN is
# set to http/1.1 on the tls handler: it offers h2 by default).
#
# Workloads:
#   W4   keep-alive, wrk -t$THREADS -c$CONNS: 16 client connections, so 16
#        upstream handshakes per run; the rest is record re-encryption
#        (req/s; proxy CPU us per request)
#   W4N  one new client connection per request (Connection: close), hence
#        one new upstream connection with the client certificate per
#        request (conn/s; proxy CPU us per connection).
#
# Resumption. The origin's mTLS port issues session tickets (nginx's
# default), so an upstream leg is resumed when the proxy keeps a session
# (HAProxy, nginx with proxy_ssl_session_reuse, the suite; caddy-l4's
# proxy keeps none). The client legs (the proxies' listeners and the
# origin's direct port) make full TLS 1.3 handshakes by default
# (TICKETS=off: tickets and session caches off; the suite's terminate_tls
# with `session_tickets off`), like W2: wrk keeps its session across
# reconnects. caddy-l4's tls handler cannot resume anyway (it builds a new
# tls.Config, with its own ticket keys, for every connection; the suite's
# terminate_tls builds one per config). TICKETS=on leaves HAProxy's,
# nginx's and terminate_tls's defaults (tickets on: wrk's client legs are
# then resumed there, but not through caddy-l4). The sanity check prints, per path, whether a second
# client connection and the proxy's upstream connections were resumed.
#
# Before measuring, each path is checked: curl through it returns the
# 100-byte body, and the origin logged (only for these requests, marked
# by a header) TLS 1.3 and a verified client certificate with the
# proxy's CN; the origin must refuse a request without a client
# certificate. A short wrk run per path and workload must show requests
# and no errors. Any failure fails the script.
#
# Rounds are interleaved (every path once per round and workload), medians
# reported, ratios to direct and to nginx (target: suite >= nginx). With
# BASE=<a trustline-caddy binary>, a suite-base path runs the suite's
# config with that binary in the same rounds (e.g. built from the commit
# before a change), and suite/suite-base is printed.
# Usage: scripts/bench-l4-mtls.sh
# Environment: ROUNDS (3), DURATION (10s), WARMUP (2s), CONNS (16),
#              THREADS (1), WORKLOADS ("W4 W4N"), TICKETS (off|on, the
#              client legs), CADDY (a prebuilt trustline-caddy; else built
#              from this checkout), BASE (none), KEEP=1 keeps the work dir.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
WORKLOADS=${WORKLOADS:-"W4 W4N"}
TICKETS=${TICKETS:-off}
for w in $WORKLOADS; do
	case $w in W4 | W4N) ;; *) echo "bench-l4-mtls: unknown workload $w (W4, W4N)" >&2; exit 1 ;; esac
done
# the client legs' resumption (see above): nginx directives, HAProxy options
case $TICKETS in
off)
	ngx_front_tickets="ssl_session_tickets off; ssl_session_cache off;"
	hap_global="tune.ssl.cachesize 0"
	hap_bind="no-tls-tickets"
	;;
on) ngx_front_tickets="" hap_global="" hap_bind="" ;;
*) echo "bench-l4-mtls: TICKETS must be off or on, not $TICKETS" >&2; exit 1 ;;
esac

export PATH="$PATH:/usr/sbin"
. "$(dirname "$0")/bench-lib.sh"
need_tools wrk nginx haproxy openssl curl ps
bench_init bench-l4-mtls

read -r origin_mtls origin_plain hap ngx l4 l4_site suite suite_site base base_site <<<"$(free_ports 10)"

# --- PKI: one test CA (P-256) issues the origin's and the front's server
# certificates (name localhost) and the proxies' client certificate --------
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj "/CN=bench test CA" -keyout ca.key -out ca.crt 2>/dev/null
leaf() { # name CN extendedKeyUsage
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
		-keyout "$1.key" -out "$1.csr" 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\n' "$3" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile "$1.ext" -out "$1.crt" 2>/dev/null
	cat "$1.crt" "$1.key" >"$1.pem" # for HAProxy
}
leaf origin localhost serverAuth
leaf front localhost serverAuth
leaf proxy bench-proxy clientAuth

# --- origin: nginx http, the same 100-byte answer on both ports -------------
body=$(printf '%100s' '' | tr ' ' 'x')
mkdir -p origin/tmp
nginx_head origin >origin/nginx.conf
cat >>origin/nginx.conf <<EOF
http {
	client_body_temp_path $work/origin/tmp;
	proxy_temp_path $work/origin/tmp;
	fastcgi_temp_path $work/origin/tmp;
	uwsgi_temp_path $work/origin/tmp;
	scgi_temp_path $work/origin/tmp;
	default_type text/plain;
	keepalive_requests 100000000;
	# only the sanity requests (header X-Bench-Sanity: 1) are logged: what
	# the origin saw of the upstream leg
	map \$http_x_bench_sanity \$sanity { default 0; 1 1; }
	log_format sanity '\$server_port \$ssl_protocol \$ssl_client_verify \$ssl_session_reused "\$ssl_client_s_dn"';
	access_log $work/origin/sanity.log sanity if=\$sanity;
	ssl_protocols TLSv1.3;
	ssl_certificate $work/origin.crt;
	ssl_certificate_key $work/origin.key;
	server {
		# the proxies' upstream: requires a client certificate from the CA
		listen 127.0.0.1:$origin_mtls ssl;
		ssl_session_tickets on;
		ssl_client_certificate $work/ca.crt;
		ssl_verify_client on;
		location / { return 200 "$body"; }
	}
	server {
		# direct: the anchor, no client certificate
		listen 127.0.0.1:$origin_plain ssl;
		$ngx_front_tickets
		location / { return 200 "$body"; }
	}
}
EOF
nginx -p "$work/origin" -c "$work/origin/nginx.conf" &
pids+=($!)

# --- HAProxy 2.6: mode tcp, TLS in, mTLS out ---------------------------------
cat >haproxy.cfg <<EOF
global
	maxconn 4096
	$hap_global
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend fe
	bind 127.0.0.1:$hap ssl crt $work/front.pem ssl-min-ver TLSv1.3 $hap_bind
	default_backend origin
backend origin
	server o1 127.0.0.1:$origin_mtls ssl crt $work/proxy.pem ca-file $work/ca.crt verify required sni str(localhost) verifyhost localhost ssl-min-ver TLSv1.3
EOF
haproxy -db -f haproxy.cfg >haproxy.log 2>&1 &
pids+=($!)

# --- nginx 1.22 stream: a second nginx process, 1 worker ---------------------
mkdir -p nginx
nginx_head nginx stream >nginx/nginx.conf
cat >>nginx/nginx.conf <<EOF
stream {
	upstream origin {
		server 127.0.0.1:$origin_mtls;
	}
	server {
		listen 127.0.0.1:$ngx ssl;
		ssl_protocols TLSv1.3;
		ssl_certificate $work/front.crt;
		ssl_certificate_key $work/front.key;
		$ngx_front_tickets
		proxy_pass origin;
		proxy_ssl on;
		# nginx 1.22 leaves TLS 1.3 out of proxy_ssl_protocols by default
		proxy_ssl_protocols TLSv1.3;
		proxy_ssl_certificate $work/proxy.crt;
		proxy_ssl_certificate_key $work/proxy.key;
		proxy_ssl_trusted_certificate $work/ca.crt;
		proxy_ssl_verify on;
		proxy_ssl_name localhost;
		proxy_ssl_server_name on;
		proxy_ssl_session_reuse on;
	}
}
EOF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)

# --- the two Caddy paths: a layer4 server each -------------------------------
caddy_run() { # name layer4-server-port site-port handler-block terminating-handler [its options]; the binary is $caddy_bin or $CADDY
	local dir="$work/$1"
	mkdir -p "$dir"
	cat >"$dir/Caddyfile" <<EOF
{
	admin off
	skip_install_trust
	auto_https disable_redirects
	servers {
		protocols h1 h2
	}
	layer4 {
		127.0.0.1:$2 {
			route {
				$5 {$6
					connection_policy {
						alpn http/1.1
					}
				}
$4
			}
		}
	}
}

# loads the front certificate into Caddy's tls app for the tls handler
https://localhost:$3 {
	bind 127.0.0.1
	tls $work/front.crt $work/front.key
	respond "site"
}
EOF
	HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
		"${caddy_bin:-$CADDY}" run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/log" 2>&1 &
	pids+=($!)
}
# caddy-l4's tls handler cannot resume (see above); the suite's
# terminate_tls can, so with TICKETS=off it is told not to
suite_tickets=""
[[ $TICKETS == off ]] && suite_tickets="
					session_tickets off"
caddy_run caddy-l4 "$l4" "$l4_site" "				proxy {
					upstream 127.0.0.1:$origin_mtls {
						tls
						tls_client_auth $work/proxy.crt $work/proxy.key
						tls_trust_pool file $work/ca.crt
						tls_server_name localhost
					}
				}" tls ""
suite_handler="				passthrough 127.0.0.1:$origin_mtls {
					tls {
						client_identity pem $work/proxy.crt $work/proxy.key
						trust_pool file $work/ca.crt
						server_name localhost
					}
				}"
caddy_run suite "$suite" "$suite_site" "$suite_handler" terminate_tls "$suite_tickets"

paths=(direct haproxy nginx caddy-l4 suite)
declare -A port=([direct]=$origin_plain [haproxy]=$hap [nginx]=$ngx [caddy-l4]=$l4 [suite]=$suite)
declare -A proc=([haproxy]=${pids[1]} [nginx]=${pids[2]} [caddy-l4]=${pids[3]} [suite]=${pids[4]})
declare -A logs=([direct]="" [haproxy]=$work/haproxy.log [nginx]=$work/nginx/error.log
	[caddy-l4]=$work/caddy-l4/log [suite]=$work/suite/log)
if [[ -n ${BASE:-} ]]; then
	caddy_bin=$BASE caddy_run suite-base "$base" "$base_site" "$suite_handler" terminate_tls "$suite_tickets"
	paths+=(suite-base)
	port[suite-base]=$base proc[suite-base]=${pids[5]} logs[suite-base]=$work/suite-base/log
	wait_port "$base"
fi
for p in "$origin_mtls" "$origin_plain" "$hap" "$ngx" "$l4" "$suite"; do wait_port "$p"; done

# --- sanity: every path really re-encrypts with the client certificate ------
# The origin refuses a request without a client certificate (nginx answers
# 400), and serves one with the proxies' certificate.
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.crt "https://localhost:$origin_mtls/" || true)
[[ $code == 400 ]] || fail "the mTLS origin answered $code without a client certificate (want 400)" origin/error.log
got=$(curl -sS --cacert ca.crt --cert proxy.crt --key proxy.key "https://localhost:$origin_mtls/") ||
	fail "the mTLS origin refused the proxies' client certificate" origin/error.log
[[ $got == "$body" ]] || fail "the mTLS origin answered '$got'" origin/error.log

sanity_get() { # path: one request through it, marked for the origin's log; prints the origin's log line
	local before out
	before=$(wc -l <origin/sanity.log)
	out=$(curl -sS -v --cacert ca.crt -H 'X-Bench-Sanity: 1' "https://localhost:${port[$1]}/" 2>curl.err) ||
		fail "$1: curl failed: $(tail -n 3 curl.err)" "${logs[$1]}" origin/error.log
	[[ $out == "$body" ]] || fail "$1: answered '$out', not the 100-byte body" "${logs[$1]}" origin/error.log
	grep -q 'SSL connection using TLSv1.3' curl.err || fail "$1: the client leg is not TLS 1.3: $(grep 'SSL connection' curl.err)"
	for _ in $(seq 1 100); do # nginx writes the line just after the response
		[[ $(wc -l <origin/sanity.log) -gt $before ]] && break
		sleep 0.01
	done
	tail -n +$((before + 1)) origin/sanity.log | head -n 1
}
client_leg() { # path: "resumed" if a second client connection resumes the first one's session, else "full"
	local req='GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
	rm -f client.sess
	printf %b "$req" | timeout 10 openssl s_client -connect "127.0.0.1:${port[$1]}" -servername localhost \
		-sess_out client.sess -ign_eof >/dev/null 2>&1 || true
	printf %b "$req" | timeout 10 openssl s_client -connect "127.0.0.1:${port[$1]}" -servername localhost \
		-sess_in client.sess -ign_eof 2>/dev/null | grep -q '^Reused' && echo resumed || echo full
}
declare -A resumed client
for p in "${paths[@]}"; do
	client[$p]=$(client_leg "$p")
	if [[ $TICKETS == off && ${client[$p]} == resumed ]]; then
		fail "$p: a client connection resumed a session with TICKETS=off"
	fi
	line=$(sanity_get "$p")
	read -r lport proto verify reused dn <<<"$line"
	if [[ $p == direct ]]; then
		[[ $lport == "$origin_plain" && $proto == TLSv1.3 ]] || fail "direct: the origin logged '$line'"
		continue
	fi
	[[ $lport == "$origin_mtls" && $proto == TLSv1.3 && $verify == SUCCESS && $dn == '"CN=bench-proxy"' ]] ||
		fail "$p: the origin logged '$line' (want port $origin_mtls TLSv1.3 SUCCESS \"CN=bench-proxy\")" "${logs[$p]}"
	# two more new connections: did the proxy resume its upstream session?
	r=$reused
	for _ in 1 2; do r+=" $(sanity_get "$p" | awk '{print $4}')"; done
	resumed[$p]=$r
done
echo "sanity: every path returns the 100-byte body; the origin saw TLS 1.3 and CN=bench-proxy from each proxy" >&2
echo "  client leg: a second connection's handshake (TICKETS=$TICKETS); upstream leg: 3 new connections (r = resumed, . = full)" >&2
for p in "${paths[@]}"; do
	printf '  %-9s client leg: %-7s  upstream leg: %s\n' "$p" "${client[$p]}" "${resumed[$p]:--}" >&2
done

# --- measuring ---------------------------------------------------------------
hz=$(getconf CLK_TCK)
run_wrk() { # path workload duration
	local url="https://localhost:${port[$1]}/"
	case $2 in
	W4) wrk -t"$THREADS" -c"$CONNS" -d"$3" "$url" ;;
	W4N) wrk -t"$THREADS" -c"$CONNS" -d"$3" -H "Connection: close" "$url" ;;
	esac
}

for w in $WORKLOADS; do
	for p in "${paths[@]}"; do
		check_wrk "$p" "$w" "$(run_wrk "$p" "$w" 1s)"
	done
done

declare -A results
for r in $(seq 1 "$ROUNDS"); do
	for w in $WORKLOADS; do
		for p in "${paths[@]}"; do
			measure "$r" "$p" "$w"
			reqs=$(awk '/requests in/{print $1}' <<<"$out")
			v=$(awk '/Requests\/sec/{printf "%.0f", $2}' <<<"$out")
			# proxy CPU in microseconds per request
			cpu=$(awk -v t="$cpu_ticks" -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.1f", t*1000000/hz/n}')
			results[$w,$p]+="$v "
			results[$w,$p,cpu]+="$cpu "
			echo "round $r $w $p: $v req/s, proxy cpu ${cpu}us/req" >&2
		done
	done
done


echo
echo "Layer-4 TLS in, mTLS out on 127.0.0.1, 100 B responses, wrk -t$THREADS -c$CONNS, $ROUNDS interleaved rounds of $DURATION after $WARMUP warm-up, medians, $(nproc) CPUs"
echo "W4: keep-alive (req/s); W4N: one new client connection, so one new upstream mTLS connection, per request (conn/s)"
echo "columns: rate, x direct (no client cert), x nginx, proxy CPU per request"
echo
for w in $WORKLOADS; do
	d=$(median "${results[$w,direct]}")
	n=$(median "${results[$w,nginx]}")
	printf '%-4s %-10s | %8s | %8s | %8s | %s\n' "$w" path "req/s" "x direct" "x nginx" "proxy CPU"
	for p in "${paths[@]}"; do
		v=$(median "${results[$w,$p]}")
		c="$(median "${results[$w,$p,cpu]}") us/req"
		[[ $p == direct ]] && c=-
		printf '%-4s %-10s | %8s | %8s | %8s | %s\n' "$w" "$p" "$v" "$(ratio "$v" "$d")" "$(ratio "$v" "$n")" "$c"
	done
	echo
done
for w in $WORKLOADS; do
	s=$(median "${results[$w,suite]}")
	n=$(median "${results[$w,nginx]}")
	x=$(ratio "$s" "$n")
	verdict=$(awk -v x="$x" 'BEGIN{print (x >= 1.00) ? "met" : "not met"}')
	if [[ $w == W4 ]]; then
		echo "suite/nginx W4: $x (target >= 1.00: $verdict)"
	else
		echo "suite/nginx W4N: $x (no target; >= 1.00: $verdict)"
	fi
	if [[ -n ${BASE:-} ]]; then
		echo "suite/suite-base $w: $(ratio "$s" "$(median "${results[$w,suite-base]}")") (BASE=$BASE, same rounds)"
	fi
done
