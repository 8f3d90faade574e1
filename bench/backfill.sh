#!/usr/bin/env bash
# Backfill: N NDJSON lines (default 100,000, ~300 bytes each) fed from psql to
# webhook_outbox.backfill() in one call, the way an operator does it:
#   \set content `cat events.ndjson`
#   SELECT * FROM webhook_outbox.backfill(:'content');
# Times (psql \timing, so the 30 MB round trip is included): a dry run, the
# real run, the same file again (all duplicates), a fan-out to two endpoints,
# and pg_read_file() instead of a psql variable.
#   bench/backfill.sh [N]
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-100000}
WORK=${BENCH_DIR:-/tmp/wo-bench-backfill}
PGPORT=55460
mkdir -p "$WORK"
# No worker: this measures writing the outbox, not delivering it.
bench_cluster_start "$WORK/pg" $PGPORT "webhook_outbox.workers=0"
trap 'bench_cluster_stop "$WORK/pg"' EXIT

FILE=$WORK/events.ndjson
python3 - "$N" "$FILE" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({
            "event_id": f"evt_{i:09d}", "event_type": "order.paid", "request_id": f"req_{i:09d}",
            "schema_version": 2, "actor": {"user_id": f"user_{i % 5000:06d}", "kind": "customer"},
            "occurred_at": "2026-01-15T10:00:00Z",
            "data": {"order_id": f"ord_{i:010d}", "amount": 1999, "currency": "EUR",
                     "items": [{"sku": "SKU-1", "qty": 1}, {"sku": "SKU-2", "qty": 2}], "note": "x" * 60},
        }, separators=(",", ":")) + "\n")
PY
chmod 644 "$FILE"
echo "input: $N lines, $(stat -c %s "$FILE") bytes ($(( $(stat -c %s "$FILE") / N )) bytes/line)"

$PSQL -c "SELECT webhook_outbox.create_endpoint('https://a.example/hook', 'a')" \
      -c "CREATE TABLE public.bench_times (label text, ms numeric)" >/dev/null

# One timed statement; prints and records its milliseconds.
timed() {
    local label=$1 sql=$2
    local ms
    ms=$($PSQL -At <<SQL | awk '/^Time: / {print $2}'
\set content \`cat $FILE\`
\timing on
$sql
SQL
    )
    $PSQL -c "INSERT INTO public.bench_times VALUES ('$label', $ms)"
}
fresh() { $PSQL -c "TRUNCATE webhook_outbox.deliveries, webhook_outbox.backfill_runs CASCADE" >/dev/null; }

fresh
timed "dry run, 1 endpoint" "SELECT * FROM webhook_outbox.backfill(:'content', dry_run => true);"
timed "real run, 1 endpoint" "SELECT * FROM webhook_outbox.backfill(:'content');"
timed "same file again (all duplicates)" "SELECT * FROM webhook_outbox.backfill(:'content');"
$PSQL -c "SELECT webhook_outbox.create_endpoint('https://b.example/hook', 'b')" >/dev/null
fresh
timed "real run, fan-out to 2 endpoints" "SELECT * FROM webhook_outbox.backfill(:'content');"
$PSQL -c "UPDATE webhook_outbox.endpoints SET enabled = false WHERE name = 'b'" >/dev/null
fresh
timed "real run, pg_read_file (superuser)" "SELECT * FROM webhook_outbox.backfill(pg_read_file('$FILE'));"

$PSQL -c "SELECT processed, created, enqueued, duplicates, failed FROM webhook_outbox.backfill_runs ORDER BY id DESC LIMIT 1"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
$PSQL -c "SELECT label AS \"backfill of $N lines\", round(ms) AS ms, round($N / (ms / 1000)) AS lines_per_s FROM public.bench_times"
