#!/bin/sh
# Makes the example's PKI with openssl in the directory given: a client CA
# (which also signs the edge's server certificate, to keep the example
# short), the edge's certificate for localhost, and three client
# certificates carrying SPIFFE IDs.
set -eu
dir=${1:?usage: make-certs.sh <dir>}
mkdir -p "$dir"
cd "$dir"

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

newkey ca
openssl req -x509 -new -key ca.key -days 30 -subj "/O=Example/CN=Example Workload CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out ca.crt

# issue <name> <subject> <extensions...>
issue() {
	name=$1 subject=$2
	shift 2
	newkey "$name"
	openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
	printf '%s\n' "$@" > "$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
		-extfile "$name.ext" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}

issue server "/CN=localhost" "basicConstraints=critical,CA:FALSE" \
	"keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
	"subjectAltName=DNS:localhost,IP:127.0.0.1"

# client X509-SVIDs: exactly one URI SAN, the SPIFFE ID
svid() {
	issue "$1" "/O=Example/CN=$1" "basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" \
		"subjectAltName=URI:$2"
}
svid web spiffe://example.org/ns/prod/sa/web
svid batch spiffe://example.org/ns/dev/sa/batch
svid partner spiffe://partner.example/ns/prod/sa/web
echo "certificates written to $dir"
