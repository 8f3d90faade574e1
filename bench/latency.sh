#!/usr/bin/env bash
# Latency from COMMIT to the receiver at low load, with the default poll
# interval raised to 10 s so that only the commit wake-up can explain a fast delivery.
#   bench/latency.sh [N]     (default 1000)
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-1000}
WORK=${BENCH_DIR:-/tmp/wo-bench-latency}
python3 -c 'import psycopg' 2>/dev/null || python3 -m pip install -q 'psycopg[binary]'
bench_cluster_start "$WORK/pg" 55441 "webhook_outbox.poll_interval='10s'"
trap 'bench_cluster_stop "$WORK/pg"' EXIT
python3 latency.py "$WORK/pg" 55441 "$N"
