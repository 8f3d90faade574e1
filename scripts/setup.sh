#!/usr/bin/env bash
# Installs what building and testing need, idempotently: Debian packages,
# cargo-pgrx 0.18.0, pgrx's PostgreSQL 15 configuration. Sourced by demo.sh and test.sh.
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

PACKAGES="postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo nginx wrk nghttp2-client bc python3 ca-certificates"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# Debian starts a system-wide cluster and nginx on install; we use our own throwaway ones.

# scripts/test.sh checks formatting and lints.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.0"; then
    echo "setup: installing cargo-pgrx 0.18.0 (a few minutes)"
    cargo install cargo-pgrx --version 0.18.0 --locked --quiet
fi
if ! grep -q '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
    cargo pgrx init --pg15 /usr/bin/pg_config >/dev/null
fi

# Installs the extension into the system PostgreSQL 15 (where clusters load it from).
install_extension() {
    local flags=()
    [ "$(id -u)" = 0 ] || flags+=(--sudo)
    cargo pgrx install --release --pg-config /usr/bin/pg_config "${flags[@]}"
}
