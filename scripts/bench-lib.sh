# bench-lib.sh: what the side-by-side benchmark scripts share (sourced,
# not run). bench_init sets up the work dir, the cleanup of every process
# the script starts (append their pids to the pids array) and the suite's
# binary; the rest are small helpers for ports, failures, CPU time and
# wrk's output.

# bench_init NAME: $repo, $work (a temp dir, kept with KEEP=1), $pids,
# $cleanups (commands run after the processes are stopped), $bench_name,
# and $CADDY (built from this checkout unless set).
bench_init() {
	bench_name=$1
	repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	work=$(mktemp -d "/tmp/$bench_name.XXXXXX")
	chmod 755 "$work" # nginx workers run as nobody
	pids=()
	cleanups=()
	trap bench_cleanup EXIT
	CADDY=${CADDY:-}
	if [[ -z "$CADDY" ]]; then
		command -v go >/dev/null || fail "go is not installed (or set CADDY)"
		echo "building the suite..." >&2
		(cd "$repo" && go build -o "$work/caddy" ./cmd/trustline-caddy)
		CADDY=$work/caddy
	fi
}

bench_cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	local c
	for c in "${cleanups[@]}"; do eval "$c" || true; done
	if [[ "${KEEP:-}" == 1 ]]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}

need_tools() { # tool...: fail unless each is installed
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install-deps.sh installs what the benchmarks use)"
	done
}

free_ports() { # N: N distinct loopback ports nobody listens on, on one line
	local used=" " n=0 p
	while ((n < $1)); do
		p=$((20000 + RANDOM % 40000))
		case $used in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			used="$used$p "
			n=$((n + 1))
		fi
	done
	echo "$used"
}

# wait_port port [host [prefix...]]: wait up to 10 s for something to
# listen on host (127.0.0.1), probing through prefix (e.g. ip netns exec NS)
wait_port() {
	local port=$1 host=${2:-127.0.0.1}
	shift
	(($#)) && shift
	for _ in $(seq 1 200); do
		"${@:-command}" bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "port $port on $host did not open"
}

fail() { # message [log files...]: print them and exit
	echo "${bench_name:-bench}: $1" >&2
	shift
	for f in "$@"; do [[ -s "$f" ]] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
	exit 1
}

ticks() { # pid: utime+stime of the process and its children (nginx's worker), in clock ticks
	local total=0 p
	[[ -n "${1:-}" ]] || { echo 0; return; }
	for p in "$1" $(ps -o pid= --ppid "$1"); do
		# fields after the "(comm)" one: utime and stime are the 12th and 13th
		total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
	done
	echo "$total"
}

# wrk prints "Requests/sec: N", "N requests in Ds, X read" and, with
# --latency, the 50% latency; these turn its units into numbers.
to_mib() { # 12.3MB / 800.1KB / 1.2GB -> MiB
	awk -v v="$1" 'BEGIN{n=v+0; u=substr(v,length(v)-1); if(u=="GB")n*=1024; else if(u=="KB")n/=1024; else if(u!="MB")n/=1048576; printf "%.1f", n}'
}
to_us() { # 1.23ms / 456.00us / 1.2s -> microseconds
	awk -v v="$1" 'BEGIN{n=v+0; if(v~/ms$/)n*=1000; else if(v~/us$/)n*=1; else if(v~/s$/)n*=1000000; printf "%.0f", n}'
}

# wrk_pct out pct: wrk's --latency percentile line (50%, 99%) in microseconds
wrk_pct() { to_us "$(awk -v p="$2" '$1==p{print $2}' <<<"$1")"; }

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{if(NR%2)print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

# measure round path workload: one warm-up run and one measured run of the
# script's own run_wrk; sets $out (wrk's output) and $cpu_ticks (the CPU
# time of the path's proxy, proc[path], during the measured run), and
# reports wrk's errors on stderr.
measure() {
	run_wrk "$2" "$3" "$WARMUP" >/dev/null
	local t0
	t0=$(ticks "${proc[$2]:-}")
	out=$(run_wrk "$2" "$3" "$DURATION")
	cpu_ticks=$(($(ticks "${proc[$2]:-}") - t0))
	if grep -q -e "Non-2xx" -e "Socket errors" <<<"$out"; then
		echo "round $1 $3 $2: $(grep -e 'Non-2xx' -e 'Socket errors' <<<"$out" | tr '\n' ' ')" >&2
	fi
}

# nginx_head DIR [stream]: the first lines of an nginx.conf for a process
# whose pid and error log live in $work/DIR, one worker; with "stream",
# Debian's dynamically built stream module is loaded first.
nginx_head() {
	local stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
	if [[ ${2:-} == stream && -f $stream_module ]]; then
		echo "load_module $stream_module;"
	fi
	cat <<HEAD
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
worker_processes 1;
events { worker_connections 4096; }
HEAD
}

# check_wrk path workload output: a run with no requests, non-2xx answers
# or socket errors fails the script, with the path's log (logs[path]) and
# the origin's.
check_wrk() {
	local n
	n=$(awk '/requests in/{print $1}' <<<"$3")
	if [[ -z "$n" || "$n" == 0 ]] || grep -q -e "Non-2xx" -e "Socket errors" <<<"$3"; then
		fail "$1 $2: wrk run failed:
$3" "${logs[$1]}" origin/error.log
	fi
}
