#!/usr/bin/env python3
"""Latency from COMMIT of an enqueue to the request reaching the receiver, at
low load (one event at a time, ~200 commits/s). The receiver runs in this
process, so both ends read the same monotonic clock. Prints p50/p90/p99/max.
usage: latency.py PGHOST PGPORT N"""
import http.server, socketserver, statistics, sys, threading, time

import psycopg

arrivals = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        now = time.monotonic()
        self.rfile.read(int(self.headers.get("content-length", 0)))
        arrivals[self.headers["webhook-id"]] = now
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=False) as conn:
        endpoint = conn.execute("SELECT webhook_outbox.create_endpoint(%s, rate_limit_rps => 0)", (url,)).fetchone()[0]
        conn.commit()
        committed = {}
        for i in range(n):
            key = f"lat-{i}"
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
    print(f"commit→receiver latency over {len(ms)} events: p50 {q[49]:.2f} ms, p90 {q[89]:.2f} ms, "
          f"p99 {q[98]:.2f} ms, max {ms[-1]:.2f} ms; not delivered within 5 s: {len(lost)}")


if __name__ == "__main__":
    main()
