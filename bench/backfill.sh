#!/usr/bin/env bash
# Backfill: N NDJSON lines (default 100,000, ~390 bytes each) fed from psql to
# webhook_outbox.backfill() in one call, the way an operator does it:
#   \set content `cat events.ndjson`
#   SELECT * FROM webhook_outbox.backfill(:'content');
# Cases: a dry run, the real run, the same file again (all duplicates),
# pg_read_file() instead of a psql variable, a fan-out to two endpoints, and as
# the reference a plain INSERT ... SELECT of the same rows from a table. Each
# is timed by psql's \timing (so the 39 MB round trip counts) and by the CPU
# time of its backend, three rounds, medians reported.
#   bench/backfill.sh [N]
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
# (cargo pgrx test installs a debug build over it).
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-100000}
WORK=${BENCH_DIR:-/tmp/wo-bench-backfill}
PGPORT=55460
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
      -c "CREATE TABLE public.bench_times (ord integer GENERATED ALWAYS AS IDENTITY, label text, ms numeric, cpu_ms numeric)" >/dev/null

# One timed statement: wall time from psql's \timing, and the CPU time the
# backend spent (utime + stime from /proc), which is what the call costs on
# an otherwise idle core. Both are recorded.
TICK_MS=$(( 1000 / $(getconf CLK_TCK) ))
timed() {
    local label=$1 sql=$2 out
    out=$($PSQL -At <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND_PID :pid
\set content \`cat $FILE\`
\! echo cpu_before \$(awk '{print \$14 + \$15}' /proc/\$BACKEND_PID/stat)
\timing on
$sql
\timing off
\! echo cpu_after \$(awk '{print \$14 + \$15}' /proc/\$BACKEND_PID/stat)
SQL
    )
    local ms cpu0 cpu1
    ms=$(awk '/^Time: / {print $2}' <<<"$out")
    cpu0=$(awk '/^cpu_before/ {print $2}' <<<"$out")
    cpu1=$(awk '/^cpu_after/ {print $2}' <<<"$out")
    $PSQL -c "INSERT INTO public.bench_times (label, ms, cpu_ms) VALUES ('$label', $ms, $(( (cpu1 - cpu0) * TICK_MS )))"
}
fresh() { $PSQL -c "TRUNCATE webhook_outbox.deliveries, webhook_outbox.backfill_runs CASCADE" >/dev/null; }

# The reference: the floor under any backfill, the same rows inserted by one
# plain INSERT ... SELECT from a table (no parsing, no checks, no reporting).
$PSQL -c "CREATE TABLE public.staged AS
          SELECT j->>'event_id' AS event_id, j->>'event_type' AS event_type, l AS payload, j->'actor'->>'user_id' AS subject_id
          FROM regexp_split_to_table(pg_read_file('$FILE'), E'\n') l, LATERAL (SELECT l::jsonb) AS t(j) WHERE l <> ''" \
      -c "SELECT webhook_outbox.create_endpoint('https://b.example/hook', 'b')" \
      -c "UPDATE webhook_outbox.endpoints SET enabled = false WHERE name = 'b'" >/dev/null
# Rounds, each case once per round; the median is reported (a shared machine's
# load, checkpoints and first touches of shared buffers make single runs vary).
for round in 1 2 3; do
    fresh
    timed "dry run, 1 endpoint" "SELECT * FROM webhook_outbox.backfill(:'content', dry_run => true);"
    timed "real run, 1 endpoint" "SELECT * FROM webhook_outbox.backfill(:'content');"
    timed "same file again (all duplicates)" "SELECT * FROM webhook_outbox.backfill(:'content');"
    fresh
    timed "real run, pg_read_file (superuser)" "SELECT * FROM webhook_outbox.backfill(pg_read_file('$FILE'));"
    fresh
    $PSQL -c "UPDATE webhook_outbox.endpoints SET enabled = true WHERE name = 'b'" >/dev/null
    timed "real run, fan-out to 2 endpoints" "SELECT * FROM webhook_outbox.backfill(:'content');"
    $PSQL -c "UPDATE webhook_outbox.endpoints SET enabled = false WHERE name = 'b'" >/dev/null
    fresh
    timed "reference: plain INSERT ... SELECT of the same rows" "INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts)
  SELECT 1, event_id, event_type, payload::jsonb, subject_id, 'pending', 5 FROM public.staged
  ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING;"
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
$PSQL -c "SELECT label AS \"backfill of $N lines (median of 3)\", round(wall) AS wall_ms, round($N / (wall / 1000)) AS lines_per_s_wall,
                 cpu AS backend_cpu_ms, round($N / (cpu / 1000)) AS lines_per_s_cpu
          FROM (SELECT label, min(ord) AS first, percentile_disc(0.5) WITHIN GROUP (ORDER BY ms) AS wall,
                       percentile_disc(0.5) WITHIN GROUP (ORDER BY cpu_ms) AS cpu
                FROM public.bench_times GROUP BY label) t
          ORDER BY first"
