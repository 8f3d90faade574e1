#!/usr/bin/env python3
"""A small webhook receiver for the demo: verifies the Standard Webhooks
signature and answers with the status the path asks for (/ok -> 204,
/fail -> 500, /gone -> 410). Loopback only."""
import base64, hashlib, hmac, http.server, json, sys, time

SECRETS = {}  # path -> whsec_ secret, from the command line: /ok=whsec_...


def verify(secret, headers, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig.split(",", 1)[1] == expected for sig in headers["webhook-signature"].split())


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        ok = verify(SECRETS[self.path], self.headers, body) if self.path in SECRETS else None
        status = {"/ok": 204, "/fail": 500, "/gone": 410}.get(self.path, 404)
        print(f"receiver: {time.strftime('%H:%M:%S')} POST {self.path} -> {status} "
              f"webhook-id={self.headers['webhook-id']} signature={'valid' if ok else 'INVALID' if ok is False else 'unchecked'} "
              f"body={json.loads(body)}", flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1])
    SECRETS.update(arg.split("=", 1) for arg in sys.argv[2:])
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
