#!/usr/bin/env bash
# Go clients against Caudal (`make test-go`): Sarama pinned to old Kafka releases.
# Modules come from the Go module proxy into Go's module cache (fast when present).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
command -v go >/dev/null || { echo "run.sh: go is missing" >&2; exit 1; }
export CAUDAL_BIN="${CAUDAL_BIN:-$repo/target/debug/caudal}"
export CAUDAL_TMP="$repo/target/tmp"
mkdir -p "$CAUDAL_TMP"
cd "$here"
go test -count=1 -timeout 600s -v ./... 2>&1 | grep -E "^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go" || true
exit "${PIPESTATUS[0]}"
