#!/usr/bin/env bash
# The database's own share of a delivery, without HTTP: one backend claims
# 500 rows with the worker's _claim() and settles them as sent with the writes
# sql/queries/settle.sql makes for a 2xx (the row's status, its attempts row),
# a transaction each, as the worker does, until N deliveries are settled. No
# worker, no receiver: the rate is a ceiling on what one worker can drain on
# this machine, whatever its HTTP side. Three rounds, each on a fresh cluster;
# the median, with the time per statement.
#   bench/sql_floor.sh [N]        (default 50000)
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-50000}
WORK=${BENCH_DIR:-/tmp/wo-bench-sql-floor}
PGPORT=55472
mkdir -p "$WORK"
# pgbench has no arrays: the claim hands the ids and lease tokens on as
# quoted array literals (\gset), which the settle unnests.
cat > "$WORK/cycle.sql" <<'SQL'
SELECT pg_catalog.quote_literal('{' || string_agg(id::text, ',') || '}') AS ids,
       pg_catalog.quote_literal('{' || string_agg(lease_token::text, ',') || '}') AS tokens
FROM webhook_outbox._claim(500, '30 seconds') \gset
WITH r AS (SELECT * FROM unnest(:ids::bigint[], :tokens::uuid[]) AS r (id, lease)), upd AS (UPDATE webhook_outbox.deliveries d SET status = 'sent', last_status_code = 204, last_error = NULL, locked_until = NULL, sent_at = now() FROM r WHERE d.id = r.id AND webhook_outbox._held_by(d.locked_until, d.lease_token, r.lease) RETURNING d.id, d.endpoint_id, d.attempt_count), log AS (INSERT INTO webhook_outbox.attempts (delivery_id, endpoint_id, attempt_no, duration_ms, status_code, remote_addr) SELECT id, endpoint_id, attempt_count, 1, 204, '127.0.0.1' FROM upd) SELECT count(*) FROM upd;
SQL
RATES=()
for round in 1 2 3; do
    bench_cluster_start "$WORK/pg" $PGPORT "webhook_outbox.workers=0" >/dev/null
    $PSQL -c "SELECT webhook_outbox.create_endpoint('http://127.0.0.1:9/unused', rate_limit_rps => 0)" >/dev/null
    # The payload of bench/throughput.sh's size (about 300 bytes).
    $PSQL -c "SELECT count(webhook_outbox.enqueue(1, 'order.paid',
                  jsonb_build_object('order_id', g, 'amount', 1999, 'currency', 'EUR', 'note', repeat('x', 220))))
              FROM generate_series(1, $N) g" >/dev/null
    $PSQL -c "VACUUM ANALYZE webhook_outbox.deliveries" -c "CHECKPOINT" >/dev/null
    out=$(as_postgres "$BIN/pgbench" -n -r -h "$WORK/pg" -p $PGPORT -U postgres -c 1 -t $((N / 500)) -f "$WORK/cycle.sql" postgres)
    sent=$($PSQL -Atc "SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'sent'")
    [ "$sent" = "$N" ] || { echo "only $sent of $N settled" >&2; exit 1; }
    rate=$(echo "$out" | awk '/^tps =/ {printf "%.0f", $3 * 500}')
    per=$(echo "$out" | awk '/^ +[0-9.]+ +[0-9]+ +(SELECT|WITH)/ {printf "%s %.1f us/row; ", $3, $1 * 1000 / 500}')
    echo "round $round: $rate deliveries/s (${per%; })"
    RATES+=("$rate")
    bench_cluster_stop "$WORK/pg"
done
median=$(printf '%s\n' "${RATES[@]}" | sort -n | sed -n 2p)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "SQL only, one backend, claim and settle 500 at a time: median $median deliveries/s ($(awk -v r="$median" 'BEGIN {printf "%.1f", 1e6 / r}') us per delivery)"
