#!/usr/bin/env bash
# bench-config-load.sh: how long an admin config load takes (and how much
# CPU and memory it costs) when many sites share one client-CA bundle, the
# suite's `trust_pool bundle` against Caddy's own `trust_pool file`, side
# by side in one run. Workload L1 of docs/benchmarks.md: SITES sites (500)
# on one port, each its own name, each requiring a client certificate
# verified against the same CAS-CA (50) PEM bundle.
#
#   vanilla     plain Caddy 2.11.9 (cmd/caddy, without the suite; built
#               from the module cache unless VANILLA names a binary),
#               `trust_pool file bundle.pem` in every site
#   suite-file  the suite's binary with the same config: Caddy's own
#               `trust_pool file` (what the suite's presence alone costs)
#   suite       the suite's binary, `trust_pool bundle bundle.pem` in every
#               site (one shared, watched source)
#   base        with CADDY_BASE set: the same as suite, with that binary
#               (the suite at another commit)
#
# Each path runs in its own Caddy process, started with its config; then
# every round POSTs that config again to each process's /load (with
# Cache-Control: must-revalidate, so that Caddy loads it even though it is
# unchanged), interleaved (vanilla, suite-file, suite, base, vanilla, ...).
# A load is timed by curl from the request to the response (Caddy answers
# once the new config is provisioned and started). Reported: the median
# load time, the process's CPU time per load (from /proc, steadier than
# times on a busy machine), its resident memory after the last load, and
# the ratios to vanilla. Before measuring, a client certificate of the
# bundle's last CA is accepted by the last site of every path, and a
# client without one refused.
#
# Usage: scripts/bench-config-load.sh
# Environment: ROUNDS (10), SITES (500), CAS (50), CADDY (a prebuilt
#              trustline-caddy; else built from this checkout), VANILLA (a
#              prebuilt plain Caddy), CADDY_BASE (a second suite binary),
#              KEEP=1 keeps the work dir.
set -euo pipefail

ROUNDS=${ROUNDS:-10}
SITES=${SITES:-500}
CAS=${CAS:-50}

. "$(dirname "$0")/bench-lib.sh"
need_tools openssl curl
bench_init bench-config-load
VANILLA=${VANILLA:-}
if [[ -z "$VANILLA" ]]; then
	echo "building plain Caddy (cmd/caddy, without the suite)..." >&2
	(cd "$repo" && go build -o "$work/vanilla-caddy" github.com/caddyserver/caddy/v2/cmd/caddy)
	VANILLA=$work/vanilla-caddy
fi
"$VANILLA" list-modules | grep -q trustline && fail "VANILLA ($VANILLA) has the suite built in"

# --- PKI (P-256, made by openssl) ----------------------------------------------
cd "$work"
for i in $(seq 1 "$CAS"); do
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=bench client CA $i" -keyout "ca$i.key" -out "ca$i.crt" 2>/dev/null
	cat "ca$i.crt" >>bundle.pem
done
# a certificate per site, as distinct tenants have: Caddy's Caddyfile
# adapter merges the TLS connection policies of sites whose settings are
# equal, so one shared certificate would leave one policy and one pool
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj "/CN=bench site CA" -keyout site-ca.key -out site-ca.crt 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out site.key
mkdir -p sites
for s in $(seq 1 "$SITES"); do
	openssl req -new -key site.key -subj "/CN=s$s.bench.test" -out sites/s.csr 2>/dev/null
	printf 'subjectAltName=DNS:s%s.bench.test\n' "$s" >sites/s.ext
	openssl x509 -req -in sites/s.csr -CA site-ca.crt -CAkey site-ca.key -CAcreateserial -days 2 \
		-extfile sites/s.ext -out "sites/s$s.crt" 2>/dev/null
done
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=client" \
	-keyout client.key -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >client.ext
openssl x509 -req -in client.csr -CA "ca$CAS.crt" -CAkey "ca$CAS.key" -CAcreateserial -days 2 \
	-extfile client.ext -out client.crt 2>/dev/null

# the median of a list of seconds or ticks, not rounded
median_n() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if(NR%2)print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# --- one Caddy process per path ------------------------------------------------
paths=(vanilla suite-file suite)
declare -A bin=([vanilla]=$VANILLA [suite-file]=$CADDY [suite]=$CADDY)
declare -A source=([vanilla]=file [suite-file]=file [suite]=bundle)
if [[ -n "${CADDY_BASE:-}" ]]; then
	paths+=(base)
	bin[base]=$CADDY_BASE
	source[base]=bundle
fi
declare -A admin site proc logs
for p in "${paths[@]}"; do
	# ports taken just before the process starts: the machine may be shared
	read -r a b <<<"$(free_ports 2)"
	admin[$p]=$a
	site[$p]=$b
	mkdir -p "$p"
	{
		cat <<EOF
{
	admin 127.0.0.1:${admin[$p]}
	auto_https disable_redirects
	skip_install_trust
	storage file_system $work/$p/data
}
EOF
		for s in $(seq 1 "$SITES"); do
			cat <<EOF
https://s$s.bench.test:${site[$p]} {
	tls $work/sites/s$s.crt $work/site.key {
		client_auth {
			mode require_and_verify
			trust_pool ${source[$p]} $work/bundle.pem
		}
	}
	respond "ok $s"
}
EOF
		done
	} >"$p/Caddyfile"
	"${bin[$p]}" adapt --config "$p/Caddyfile" --adapter caddyfile >"$p/config.json" 2>"$p/adapt.log" ||
		fail "$p: adapting the Caddyfile failed" "$p/adapt.log"
	logs[$p]=$work/$p/caddy.log
	HOME=$work/$p XDG_DATA_HOME=$work/$p/data XDG_CONFIG_HOME=$work/$p/config \
		"${bin[$p]}" run --config "$p/config.json" >"${logs[$p]}" 2>&1 &
	pids+=($!)
	proc[$p]=$!
	wait_port "${admin[$p]}"
	wait_port "${site[$p]}"
	kill -0 "${proc[$p]}" 2>/dev/null || fail "$p: Caddy exited" "${logs[$p]}"
done

# --- sanity: the last site admits a client of the last CA, refuses none ----------
for p in "${paths[@]}"; do
	url="https://s$SITES.bench.test:${site[$p]}/"
	resolve="s$SITES.bench.test:${site[$p]}:127.0.0.1"
	got=$(curl -sk --resolve "$resolve" --cert client.crt --key client.key "$url") || true
	[[ "$got" == "ok $SITES" ]] || fail "$p: a client of the last CA got '$got'" "${logs[$p]}"
	if curl -sk --resolve "$resolve" "$url" >/dev/null 2>&1; then
		fail "$p: a client without a certificate was admitted" "${logs[$p]}"
	fi
done

# load PATH: POST its config to its /load; prints the seconds it took. A
# request that got no answer (Caddy swaps its admin listener at each load,
# so the next connection can meet the closing one) is tried again after a
# pause and not timed twice.
load() {
	local code t attempt
	for attempt in 1 2 3 4 5; do
		read -r code t < <(curl -s -o "$work/$1/load.out" -w '%{http_code} %{time_total}\n' \
			-H 'Content-Type: application/json' -H 'Cache-Control: must-revalidate' \
			--data-binary @"$work/$1/config.json" "http://127.0.0.1:${admin[$1]}/load" || echo "000 0")
		[[ "$code" == 200 ]] && { echo "$t"; return; }
		[[ "$code" != 000 ]] && fail "$1: /load answered $code: $(cat "$work/$1/load.out")" "${logs[$1]}"
		sleep 0.2
		wait_port "${admin[$1]}"
	done
	fail "$1: /load got no answer 5 times" "${logs[$1]}"
}

echo "bench-config-load: $SITES sites on one $CAS-CA bundle, $ROUNDS interleaved rounds, $(nproc) CPUs"
declare -A times cpu
for p in "${paths[@]}"; do load "$p" >/dev/null; done # warm-up
for r in $(seq 1 "$ROUNDS"); do
	line="  round $r:"
	for p in "${paths[@]}"; do
		t0=$(ticks "${proc[$p]}")
		t=$(load "$p")
		cpu[$p]="${cpu[$p]:-} $(($(ticks "${proc[$p]}") - t0))"
		times[$p]="${times[$p]:-} $t"
		line="$line $p $(awk -v t="$t" 'BEGIN{printf "%.3f", t}') s"
	done
	echo "$line"
done

hz=$(getconf CLK_TCK)
printf '\n%-11s %14s %10s %16s %10s %10s %8s\n' path "load (median)" ratio "CPU/load (med.)" ratio "RSS MiB" ratio
declare -A med mcpu rss
for p in "${paths[@]}"; do
	med[$p]=$(median_n "${times[$p]}")
	mcpu[$p]=$(median_n "${cpu[$p]}")
	rss[$p]=$(awk '/^VmRSS:/{printf "%.0f", $2/1024}' "/proc/${proc[$p]}/status")
done
for p in "${paths[@]}"; do
	printf '%-11s %12.3f s %10s %13.0f ms %10s %10s %8s\n' "$p" "${med[$p]}" "$(ratio "${med[$p]}" "${med[vanilla]}")" \
		"$(awk -v t="${mcpu[$p]}" -v hz="$hz" 'BEGIN{print t * 1000 / hz}')" \
		"$(ratio "${mcpu[$p]}" "${mcpu[vanilla]}")" "${rss[$p]}" "$(ratio "${rss[$p]}" "${rss[vanilla]}")"
done
