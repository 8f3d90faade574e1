#!/usr/bin/env bash
# What the worker pays to move one emit()ted event from the intake into
# deliveries: 100,000 events in the intake of a cluster without workers, then
# pgbench runs _route_intake(500) 200 times (a transaction each) and reports
# the time per event. NOFK=1 also measures it without deliveries' foreign key
# (dropped in this throwaway cluster), to show that check's share.
#   bench/move.sh
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
WORK=${BENCH_DIR:-/tmp/wo-bench-move}
bench_cluster_start "$WORK/pg" 55471 "webhook_outbox.workers=0"
trap 'bench_cluster_stop "$WORK/pg"' EXIT
$PSQL -c "SELECT webhook_outbox.create_endpoint('http://127.0.0.1:9/x', rate_limit_rps => 0)" >/dev/null
echo 'SELECT webhook_outbox._route_intake(500);' > "$WORK/move.sql"
run() {
    $PSQL -c "TRUNCATE webhook_outbox.deliveries CASCADE" -c "TRUNCATE webhook_outbox.intake"
    $PSQL -c "SELECT count(webhook_outbox.emit('t', jsonb_build_object('n', g, 'customer', 'customer-' || g, 'amount', 1999)))
              FROM generate_series(1, 100000) g" >/dev/null
    $PSQL -c "VACUUM ANALYZE webhook_outbox.intake" -c "CHECKPOINT"
    local ms
    ms=$(as_postgres pgbench -n -h "$WORK/pg" -p 55471 -U postgres -c1 -t 200 -f "$WORK/move.sql" postgres 2>/dev/null |
         awk '/latency average/ {print $4}')
    echo "$1: $ms ms per move of 500 events, $(python3 -c "print(round($ms * 1000 / 500, 1))") us per event"
}
run "as installed"
if [ "${NOFK:-0}" = 1 ]; then
    $PSQL -c "ALTER TABLE webhook_outbox.deliveries DROP CONSTRAINT deliveries_endpoint_id_fkey"
    run "without the foreign key"
fi
