#!/usr/bin/env bash
# The whole test suite: pure Rust and #[pg_test] tests, then the client-side
# tests in pgrx-tests/ against real clusters with the library preloaded and
# real HTTP(S) receivers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

# 1. Style, lints, and the pgrx-free crate's tests (seconds, no Postgres).
cargo fmt --all --check
cargo clippy -p webhook_outbox_core --all-targets -- -D warnings
cargo clippy --all-targets -- -D warnings
cargo test -p webhook_outbox_core

# 2. #[pg_test]s and the extension crate's unit tests (cargo pgrx starts its own cluster).
PGTEST_DATA=${PGTEST_DATA:-/tmp/webhook_outbox_pgtest}
mkdir -p "$PGTEST_DATA"
[ "$(id -u)" = 0 ] && chown postgres "$PGTEST_DATA"
if [ "$(id -u)" = 0 ]; then
    cargo pgrx test pg15 --runas postgres --pgdata "$PGTEST_DATA"
else
    cargo pgrx test pg15
fi

# 3. Integration tests: the release build, installed, under real clusters.
install_extension
(cd pgrx-tests && cargo test --release -- --test-threads=2)
