#!/usr/bin/env bash
# Retention at scale: delete N old `sent` deliveries (default 1,000,000, each
# with one attempt row) next to 100,000 recent ones, while pgbench plays the
# worker (enqueue, claim, record the result: 100 transactions/s). Measures:
#   - CALL cleanup_in_batches() (a COMMIT every 10,000 ids), the same deletion
#     as one unbatched DELETE statement (the baseline), and cleanup()
#     (statements of 10,000 ids in one transaction);
#   - the load's latency before/during/after each, from pgbench's log;
#   - index and table sizes: before, after the deletion, after VACUUM, and
#     after refilling N rows (freed pages are reused: no growth without bound).
#   bench/cleanup.sh [N]
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-1000000}
WORK=${BENCH_DIR:-/tmp/wo-bench-cleanup}
PGPORT=55470
bench_cluster_start "$WORK/pg" $PGPORT "webhook_outbox.workers=0"
PGB_PID=
trap '[ -n "$PGB_PID" ] && kill "$PGB_PID" 2>/dev/null; bench_cluster_stop "$WORK/pg"' EXIT

$PSQL -c "SELECT webhook_outbox.create_endpoint('https://a.example/hook', 'a')" >/dev/null
$PSQL -c "CREATE TABLE public.bench_sizes (step int, label text, relation text, bytes bigint)" \
      -c "CREATE TABLE public.bench_runs (label text, ms numeric, deleted text)" >/dev/null

# N sent rows 30 days old (one millisecond apart) and their attempts.
fill() {
    $PSQL <<SQL
INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, status, attempt_count, max_attempts, created_at, sent_at)
SELECT 1, 'old-' || g || '-' || i, 'order.paid', '{"order_id": 1, "amount": 1999, "currency": "EUR"}', 'sent', 1, 5,
       now() - interval '30 days' - i * interval '1 millisecond', now() - interval '30 days' - i * interval '1 millisecond'
FROM generate_series(1, $N) i, (SELECT coalesce(max(id), 0) AS g FROM webhook_outbox.deliveries) s;
INSERT INTO webhook_outbox.attempts (delivery_id, endpoint_id, attempt_no, attempted_at, duration_ms, status_code)
SELECT id, endpoint_id, 1, sent_at, 5, 200 FROM webhook_outbox.deliveries WHERE status = 'sent' AND sent_at < now() - interval '14 days';
SQL
}

step=0
sizes() {
    step=$((step + 1))
    $PSQL -c "INSERT INTO public.bench_sizes
              SELECT $step, '$1', c.relname, pg_relation_size(c.oid)
              FROM pg_class c
              WHERE c.relnamespace = 'webhook_outbox'::regnamespace
                AND (c.oid IN ('webhook_outbox.deliveries'::regclass, 'webhook_outbox.attempts'::regclass)
                     OR c.oid IN (SELECT indexrelid FROM pg_index
                                  WHERE indrelid IN ('webhook_outbox.deliveries'::regclass, 'webhook_outbox.attempts'::regclass)))"
}

# The worker's transactions, at a fixed rate, logged per transaction.
cat > "$WORK/load.sql" <<'SQL'
BEGIN;
SELECT webhook_outbox.enqueue(1, 'order.paid', '{"order_id": 2}');
SELECT webhook_outbox.record_attempt(id, lease_token, 200, 3) FROM webhook_outbox.get_ready_deliveries(5);
END;
SQL
load_start() {
    rm -f "$WORK"/pgbench_log.*
    (cd "$WORK" && exec pgbench -n -h "$WORK/pg" -p $PGPORT -U postgres -c 2 -j 1 -R 100 -T 3600 -l -f load.sql postgres >/dev/null 2>&1) &
    PGB_PID=$!
    sleep 5
}
load_stop() { kill -INT "$PGB_PID" 2>/dev/null; wait "$PGB_PID" 2>/dev/null || true; PGB_PID=; }

# Run one timed statement under load; record its time and the load's
# latency in the 5 s before, during, and the 5 s after.
timed() {
    local label=$1 sql=$2 t0 t1 out
    load_start
    t0=$(date +%s.%N)
    out=$($PSQL -At -c '\timing on' -c "$sql" 2>&1)
    t1=$(date +%s.%N)
    sleep 5
    load_stop
    local ms deleted
    ms=$(awk '/^Time: / {print $2}' <<<"$out")
    deleted=$(grep -o '[0-9]* sent deliveries deleted\|^[0-9]*$' <<<"$out" | head -1 | grep -o '^[0-9]*')
    $PSQL -c "INSERT INTO public.bench_runs VALUES ('$label', $ms, '$deleted')"
    python3 - "$label" "$t0" "$t1" "$WORK"/pgbench_log.* <<'PY'
import sys
label, t0, t1, files = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
windows = {"before": [], "during": [], "after": []}
for f in files:
    for line in open(f):
        parts = line.split()
        if len(parts) < 6:
            continue  # the last line, cut short when pgbench was stopped
        done = int(parts[4]) + int(parts[5]) / 1e6
        lat_ms = int(parts[2]) / 1000
        key = "before" if done < t0 else "during" if done <= t1 else "after"
        windows[key].append(lat_ms)
for key, lat in windows.items():
    if lat:
        lat.sort()
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        print(f"  load {key:6} {label}: {len(lat):5} txns, latency p50 {p(0.5):6.2f} ms, p99 {p(0.99):7.2f} ms, max {lat[-1]:7.2f} ms")
PY
}

# VACUUM frees the index pages the deletion emptied; the next VACUUM, once no
# snapshot predates the first, hands them to the free space map for reuse
# (autovacuum does both on its own, later).
vacuum() { $PSQL -c "VACUUM ANALYZE webhook_outbox.deliveries, webhook_outbox.attempts" -c "VACUUM webhook_outbox.deliveries, webhook_outbox.attempts" >/dev/null; }

echo "filling $N old sent deliveries + attempts, and 100,000 recent ones ..."
$PSQL -c "INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, status, attempt_count, max_attempts, sent_at)
          SELECT 1, 'recent-' || i, 'order.paid', '{}', 'sent', 1, 5, now() FROM generate_series(1, 100000) i" >/dev/null
fill
vacuum
sizes "1. $N old rows"

timed "CALL cleanup_in_batches()" "CALL webhook_outbox.cleanup_in_batches(sent_older_than => '14 days')"
sizes "2. after cleanup_in_batches"
vacuum
sizes "3. after VACUUM (twice)"
fill
vacuum
sizes "4. refilled $N old rows"

timed "one DELETE statement (unbatched)" "WITH gone AS (
    DELETE FROM webhook_outbox.deliveries WHERE status = 'sent' AND sent_at < now() - interval '14 days' RETURNING id
), gone_attempts AS (
    DELETE FROM webhook_outbox.attempts WHERE delivery_id IN (SELECT id FROM gone)
) SELECT count(*) FROM gone"
vacuum
fill
vacuum
sizes "5. deleted and refilled again"
timed "SELECT cleanup() (batched statements, one transaction)" "SELECT deleted FROM webhook_outbox.cleanup(sent_older_than => '14 days') WHERE status = 'sent'"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
$PSQL -c "SELECT label AS \"deleting $N old sent rows\", round(ms) AS ms, deleted, round(deleted::numeric / (ms / 1000)) AS rows_per_s FROM public.bench_runs"
$PSQL -c "SELECT relation, $(for s in 1 2 3 4 5; do printf "pg_size_pretty(max(bytes) FILTER (WHERE step = %s)) AS \"%s\"," $s $s; done | sed 's/,$//')
          FROM public.bench_sizes GROUP BY relation ORDER BY relation"
$PSQL -c "SELECT DISTINCT step, label FROM public.bench_sizes ORDER BY step"
