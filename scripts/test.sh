#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the tools the tests
# drive (apt-get), builds ./caddy with xcaddy, then runs vet, the unit,
# golden and integration tests against that binary.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-deps.sh
scripts/build.sh
export TRUSTLINE_CADDY="$root/caddy"
# SPIRE's server and agent for the Workload API tests: built once into a
# cache (a cold build takes many minutes), then reused
TRUSTLINE_SPIRE_DIR="$(scripts/build-spire.sh)"
export TRUSTLINE_SPIRE_DIR
# tools missing under CI fail the tests instead of skipping them
export CI="${CI:-1}"
go vet ./...
go test -count=1 -timeout 75m "$@" ./...
