#!/usr/bin/env python3
"""A small webhook receiver (Python 3.11, standard library only), shared by
scripts/demo.sh, docker/docker-compose.yml and bench/latency.py.

It answers each POST with the status its path asks for (/ok -> 204,
/fail -> 500, /gone -> 410, any other path -> --default-status), verifies the
Standard Webhooks signature when it knows the endpoint's secret, prints one
line per delivery, and can record when each request arrived.

    receiver.py PORT [PATH=whsec_... ...] [options]

    PORT                    port to listen on (0: any free port)
    PATH=whsec_...          the secret of the endpoint whose URL ends in PATH
                            (e.g. /ok=whsec_...); repeatable
    --secret whsec_...      the secret for every path without one of its own
    --host ADDR             address to bind (default 127.0.0.1, loopback only)
    --default-status N      status for paths other than /ok, /fail, /gone
                            (default 404)
    --quiet                 print nothing per delivery
    --arrivals              add arrived=<time.monotonic()> to each line

A signature is checked as Standard Webhooks receivers do: `webhook-signature`
holds space-separated `v1,<base64 HMAC-SHA256>` entries over
"{webhook-id}.{webhook-timestamp}.{body}", keyed with the base64-decoded part
of the `whsec_` secret, and `webhook-timestamp` must be within 5 minutes of
now. The result is printed (valid / INVALID / unchecked); the status answered
does not depend on it.

From Python (what bench/latency.py does):

    import receiver
    arrivals = {}
    server = receiver.start(port=0, default_status=204, log=False, arrivals=arrivals)
    # arrivals[webhook-id] = time.monotonic() when the request's headers were read
"""
import argparse
import base64
import hashlib
import hmac
import http.server
import sys
import threading
import time

OUTPUT_LOCK = threading.Lock()

ROUTES = {"/ok": 204, "/fail": 500, "/gone": 410}
TIMESTAMP_TOLERANCE_S = 5 * 60


def decode_secret(secret):
    """The HMAC key inside a `whsec_` secret (padding optional, as the extension accepts)."""
    if not secret.startswith("whsec_"):
        raise ValueError("a signing secret starts with whsec_")
    encoded = secret.removeprefix("whsec_")
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def sign(key, msg_id, timestamp, body):
    """`v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(key, headers, body, now=None):
    """None if the request is signed with `key` and recent, else what is wrong."""
    msg_id, timestamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts = int(timestamp)
    except ValueError:
        return "webhook-timestamp is not an integer"
    expected = sign(key, msg_id, timestamp, body)
    if not any(hmac.compare_digest(s, expected) for s in signatures.split()):
        return "no v1 signature matches"
    if abs((time.time() if now is None else now) - ts) > TIMESTAMP_TOLERANCE_S:
        return "webhook-timestamp more than 5 minutes off"
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        # The arrival time: the request line and headers have just been read.
        arrived = time.monotonic()
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        cfg = self.server.config
        msg_id = self.headers.get("webhook-id")
        if cfg["arrivals"] is not None:
            cfg["arrivals"][msg_id] = arrived
        status = ROUTES.get(self.path, cfg["default_status"])
        if cfg["log"]:
            key = cfg["keys"].get(self.path, cfg["default_key"])
            if key is None:
                signature = "unchecked"
            else:
                problem = verify(key, self.headers, body)
                signature = "valid" if problem is None else f"INVALID ({problem})"
            extra = f" arrived={arrived:.6f}" if cfg["show_arrival"] else ""
            # One write per line, under a lock: print() writes the newline
            # apart, and the handler threads' lines would run together.
            line = (f"receiver: {time.strftime('%H:%M:%S')} POST {self.path} -> {status} "
                    f"webhook-id={msg_id} signature={signature}{extra} "
                    f"body={body.decode(errors='replace')}\n")
            with OUTPUT_LOCK:
                sys.stdout.write(line)
                sys.stdout.flush()
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def make_server(host="127.0.0.1", port=0, *, secrets=None, secret=None,
                default_status=404, log=True, arrivals=None, show_arrival=False):
    """A threading HTTP server, not yet serving. `secrets` maps a path to its
    `whsec_` secret; `secret` covers the other paths; `arrivals`, a dict,
    receives webhook-id -> time.monotonic() at each request's arrival."""
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.config = {
        "keys": {path: decode_secret(s) for path, s in (secrets or {}).items()},
        "default_key": decode_secret(secret) if secret else None,
        "default_status": default_status,
        "log": log,
        "arrivals": arrivals,
        "show_arrival": show_arrival,
    }
    return server


def start(**kwargs):
    """make_server(**kwargs), serving on a daemon thread; its port is
    server.server_address[1]."""
    server = make_server(**kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None):
    def path_secret(arg):
        path, sep, secret = arg.partition("=")
        if not (sep and path.startswith("/")):
            raise argparse.ArgumentTypeError(f"expected PATH=whsec_..., got {arg!r}")
        return path, secret

    parser = argparse.ArgumentParser(description="Webhook receiver for the demo, docker and the latency benchmark.")
    parser.add_argument("port", type=int)
    parser.add_argument("secrets", nargs="*", type=path_secret, metavar="PATH=whsec_...")
    parser.add_argument("--secret", help="whsec_ secret for every path without its own")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--default-status", type=int, default=404)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--arrivals", action="store_true")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.host, args.port, secrets=dict(args.secrets), secret=args.secret,
                             default_status=args.default_status, log=not args.quiet,
                             show_arrival=args.arrivals)
    except ValueError as e:  # binascii.Error is a ValueError
        parser.error(f"bad signing secret: {e}")
    print(f"receiver: listening on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
