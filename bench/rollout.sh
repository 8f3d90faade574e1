#!/usr/bin/env bash
# should_emit_event() against the same bucketing written as a bare SQL
# expression (first 8 hex digits of md5 mod 100), in one run on one throwaway
# cluster with the library preloaded. Both queries count the subjects a 10%
# rollout admits among 'user-1' .. 'user-1000000'; they must agree, and the
# function must cost no more than the expression.
#
#   cargo pgrx install --release --pg-config /usr/bin/pg_config && bash bench/rollout.sh
#
# Environment: ROWS (1000000), RUNS per query (7), JIT (on, the default), PORT (5498),
# DATA (/tmp/bench-rollout).
set -euo pipefail

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-7}
JIT=${JIT:-on}
PORT=${PORT:-5498}
DATA=${DATA:-/tmp/bench-rollout}
BIN=/usr/lib/postgresql/15/bin

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop() { as_postgres "$BIN/pg_ctl" -D "$DATA" stop -m fast >/dev/null 2>&1 || true; }
trap stop EXIT

stop
rm -rf "$DATA"
mkdir -p "$DATA"
[ "$(id -u)" = 0 ] && chown postgres "$DATA"
as_postgres "$BIN/initdb" -D "$DATA" -A trust -U postgres --no-sync >/dev/null
cat >>"$DATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DATA'
shared_preload_libraries = 'webhook_outbox'
webhook_outbox.workers = 0
jit = $JIT
CONF
as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/log" -w start >/dev/null

psql() { command psql -X -q -At -h "$DATA" -p "$PORT" -U postgres "$@"; }
psql -c "CREATE EXTENSION webhook_outbox" -c "SELECT webhook_outbox.set_rollout('f', 10)" >/dev/null

FUNCTION="SELECT count(*) FILTER (WHERE webhook_outbox.should_emit_event('f', 'user-' || i)) FROM generate_series(1, $ROWS) i"
EXPRESSION="SELECT count(*) FILTER (WHERE ('x' || substr(md5('user-' || i), 1, 8))::bit(32)::bigint % 100 < 10) FROM generate_series(1, $ROWS) i"

# Each run in its own session so the function's first call pays for filling
# the cache; the queries alternate so that both see the same machine state.
time_ms() { psql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

f_count=$(psql -c "$FUNCTION")
e_count=$(psql -c "$EXPRESSION")
[ "$f_count" = "$e_count" ] || { echo "counts differ: function $f_count, expression $e_count" >&2; exit 1; }

f_times=() e_times=()
for _ in $(seq "$RUNS"); do
    f_times+=("$(time_ms "$FUNCTION")")
    e_times+=("$(time_ms "$EXPRESSION")")
done
f_med=$(printf '%s\n' "${f_times[@]}" | median)
e_med=$(printf '%s\n' "${e_times[@]}" | median)

echo "PostgreSQL $(psql -c 'SHOW server_version'), jit=$(psql -c 'SHOW jit'), $(nproc) cores, $ROWS rows, $RUNS runs each"
echo "admitted at 10%: $f_count of $ROWS (both queries)"
echo "should_emit_event: median ${f_med} ms  (runs: ${f_times[*]})"
echo "bare expression:   median ${e_med} ms  (runs: ${e_times[*]})"
awk -v f="$f_med" -v e="$e_med" -v n="$ROWS" 'BEGIN {
    printf "per row: function %.0f ns, expression %.0f ns; function/expression = %.2f\n", f * 1e6 / n, e * 1e6 / n, f / e
    exit (f <= e ? 0 : 1)
}' || { echo "FAIL: should_emit_event costs more than the bare expression" >&2; exit 1; }
