#!/usr/bin/env python3
"""Latency from COMMIT of an enqueue (or emit) to the request reaching the receiver, at
low load (one event at a time, ~200 commits/s). The receiver runs in this
process, so both ends read the same monotonic clock. Prints p50/p90/p99/max.
usage: latency.py PGHOST PGPORT N [enqueue|emit]"""
import statistics, sys, time
from pathlib import Path

import psycopg

# The receiver shared with the demo and docker (scripts/receiver.py), in this
# process: it stamps time.monotonic() as soon as a request's headers are read.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
sys.dont_write_bytecode = True  # leave no __pycache__ in scripts/
import receiver  # noqa: E402

arrivals = {}


def main():
    host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    how = sys.argv[4] if len(sys.argv) > 4 else "enqueue"
    server = receiver.start(host="127.0.0.1", port=0, default_status=204, log=False, arrivals=arrivals)
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=False) as conn:
        # Its own event type: emit() load (LOAD=n in latency.sh) goes elsewhere.
        endpoint = conn.execute("SELECT webhook_outbox.create_endpoint(%s, rate_limit_rps => 0, "
                                "event_types => ARRAY['bench.latency'])", (url,)).fetchone()[0]
        conn.commit()
        committed = {}
        for i in range(n):
            key = f"lat-{i}"
            if how == "emit":  # through the intake: the endpoint is the one subscribed
                conn.execute("SELECT webhook_outbox.emit('bench.latency', '{\"i\": 1}', %s)", (key,))
            else:
                conn.execute("SELECT webhook_outbox.enqueue(%s, 'bench.latency', '{\"i\": 1}', %s)", (endpoint, key))
            committed[key] = time.monotonic()  # just before COMMIT is sent
            conn.commit()
            deadline = time.monotonic() + 5
            while key not in arrivals and time.monotonic() < deadline:
                time.sleep(0.0002)
            time.sleep(0.005)  # ~200 commits/s: low load
    lost = [k for k in committed if k not in arrivals]
    ms = sorted((arrivals[k] - t) * 1000 for k, t in committed.items() if k in arrivals)
    q = statistics.quantiles(ms, n=100)
    print(f"commit→receiver latency ({how}) over {len(ms)} events: p50 {q[49]:.2f} ms, p90 {q[89]:.2f} ms, "
          f"p99 {q[98]:.2f} ms, max {ms[-1]:.2f} ms; not delivered within 5 s: {len(lost)}")


if __name__ == "__main__":
    main()
