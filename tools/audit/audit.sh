#!/usr/bin/env bash
# Dependency audit (`make audit`, part of `make lint`): RustSec advisories against
# Cargo.lock, with one documented exception, RUSTSEC-2024-0437 (protobuf 2's parser,
# which raft-rs 0.7 pulls in and which never sees bytes from a socket here; see
# docs/operations.md, "Dependency audit"). Unmaintained/unsound notices are printed as
# warnings. The advisory database is GitHub's when it can be reached; otherwise the
# snapshot kept beside this script (its commit and date in advisory-db.commit).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.22.2
if ! cargo audit --version 2>/dev/null | grep -q "$VERSION"; then
    cargo install cargo-audit --locked --version "$VERSION"
fi
IGNORE=(--ignore RUSTSEC-2024-0437)

if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    exec cargo audit "${IGNORE[@]}"
fi
db=target/advisory-db
rm -rf "$db"
mkdir -p "$db"
tar -xzf tools/audit/advisory-db.tar.gz -C "$db"
echo "audit: GitHub unreachable; using the advisory-db snapshot $(cat tools/audit/advisory-db.commit)" >&2
exec cargo audit --db "$db" --no-fetch "${IGNORE[@]}"
