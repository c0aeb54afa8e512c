#!/usr/bin/env bash
# Builds the SPIRE server and agent that the SPIRE tests drive (v1.13.3,
# pinned as Go tools in tools/spire/go.mod), once: into
# $TRUSTLINE_SPIRE_DIR (default ~/.cache/trustline/spire-<version>), and
# not again while both binaries are there. A cold build takes well over
# ten minutes of CPU on two cores; the Go build cache keeps later ones short.
# Prints the directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=$(awk '/github.com\/spiffe\/spire /{print $2; exit}' "$root/tools/spire/go.mod")
dir="${TRUSTLINE_SPIRE_DIR:-$HOME/.cache/trustline/spire-$version}"
if [ -x "$dir/spire-server" ] && [ -x "$dir/spire-agent" ]; then
	echo "$dir"
	exit 0
fi
mkdir -p "$dir"
cd "$root/tools/spire"
for cmd in spire-server spire-agent; do
	echo "building $cmd $version (once; cached in $dir)" >&2
	go build -trimpath -o "$dir/$cmd.tmp" "github.com/spiffe/spire/cmd/$cmd"
	mv "$dir/$cmd.tmp" "$dir/$cmd"
done
echo "$dir"
