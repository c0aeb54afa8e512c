#!/usr/bin/env bash
# Builds ./caddy: Caddy v2.11.9 with the trustline suite from this working
# tree, the way users build it (xcaddy, pinned in xcaddy/go.mod as a tool).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/xcaddy"
# @v0.0.0 names the local module so go never asks the proxy to list it
go tool xcaddy build v2.11.9 \
	--output "$root/caddy" \
	--with "github.com/trustline/trustline@v0.0.0=$root"
"$root/caddy" version
