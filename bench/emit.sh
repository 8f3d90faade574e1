#!/usr/bin/env bash
# The cost of putting events into the outbox: N calls of emit() (one
# subscribed endpoint) and of enqueue(), each in one statement, in
# mode = shadow (rows recorded, nothing sent), on a fresh cluster without a
# worker. Three rounds, medians of the time per call reported, with plain
# INSERTs of the same rows into tables with the same columns and indexes as
# the references: a copy of the intake (what emit() writes) and a copy of
# deliveries (what enqueue() writes).
#   bench/emit.sh [N]          (default 20000)
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-20000}
WORK=${BENCH_DIR:-/tmp/wo-bench-emit}
PGPORT=55470
PAYLOAD='{"order_id": 42, "amount": 1999, "currency": "EUR"}'
us_per_call() { awk -v n="$N" '/^Time:/ {printf "%.1f", $2 * 1000 / n}'; }
EMIT=(); ENQUEUE=(); PLAIN=(); PLAIN_INTAKE=()
for round in 1 2 3; do
    bench_cluster_start "$WORK/pg" $PGPORT "webhook_outbox.mode='shadow'" "webhook_outbox.workers=0" >/dev/null
    $PSQL -c "SELECT webhook_outbox.create_endpoint('http://127.0.0.1:9/bench', 'bench')" >/dev/null
    $PSQL -c "CREATE TABLE plain (LIKE webhook_outbox.deliveries INCLUDING ALL)" \
          -c "CREATE TABLE plain_intake (LIKE webhook_outbox.intake INCLUDING ALL)" >/dev/null
    EMIT+=("$($PSQL -c '\timing on' -c "SELECT count(webhook_outbox.emit('order.paid', '$PAYLOAD')) FROM generate_series(1, $N)" | us_per_call)")
    ENQUEUE+=("$($PSQL -c '\timing on' -c "SELECT count(webhook_outbox.enqueue(1, 'order.paid', '$PAYLOAD')) FROM generate_series(1, $N)" | us_per_call)")
    PLAIN+=("$($PSQL -c '\timing on' -c "INSERT INTO plain (endpoint_id, event_id, event_type, payload, status, max_attempts)
                                          SELECT 1, gen_random_uuid()::text, 'order.paid', '$PAYLOAD', 'shadow', 5 FROM generate_series(1, $N)" | us_per_call)")
    PLAIN_INTAKE+=("$($PSQL -c '\timing on' -c "INSERT INTO plain_intake (endpoint_ids, event_id, event_type, payload, status)
                                          SELECT '{1}', gen_random_uuid()::text, 'order.paid', '$PAYLOAD', 'shadow' FROM generate_series(1, $N)" | us_per_call)")
    bench_cluster_stop "$WORK/pg"
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "per call, median of 3 rounds of $N: emit $(median "${EMIT[@]}") us (${EMIT[*]}), enqueue $(median "${ENQUEUE[@]}") us (${ENQUEUE[*]})"
echo "references, a plain INSERT per row in one statement: into a copy of the intake $(median "${PLAIN_INTAKE[@]}") us (${PLAIN_INTAKE[*]}), of deliveries $(median "${PLAIN[@]}") us (${PLAIN[*]})"
