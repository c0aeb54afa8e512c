# Shared by the examples' run.sh scripts (sourced, not run): certificates
# made with openssl, as an operator would make them, and a port wait.

mkca() { # file cn: a self-signed P-256 CA, file.crt and file.key
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj "/CN=$2" \
		-keyout "$1.key" -out "$1.crt" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

mkleaf() { # file cn ca eku [extra extension line, e.g. subjectAltName=DNS:x]
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
	printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n%s\n' "$4" "${5:-}" > "$1.ext"
	openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 90 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
}

wait_port() { # [host] port: wait up to 20s for something to listen
	local host=127.0.0.1 port=$1
	if [ $# -eq 2 ]; then host=$1 port=$2; fi
	for _ in $(seq 200); do
		(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nothing listens on $host:$port" >&2
	exit 1
}

ex_init() { # tool...: needs $here; sets $root and $caddy (also exported as
	# TRUSTLINE_CADDY), installs missing tools from Debian's packages (the
	# package is named like the tool), builds ./caddy when it is missing
	root="$(cd "$here/../.." && pwd)"
	export PATH="$PATH:/usr/sbin:/sbin"
	for tool in "$@"; do
		command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
	done
	caddy="${TRUSTLINE_CADDY:-$root/caddy}"
	export TRUSTLINE_CADDY="$caddy"
	[ -x "$caddy" ] || "$root/scripts/build.sh"
}
