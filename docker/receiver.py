"""Demo webhook receiver: logs each request's webhook-id and body, answers 204."""
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(self.headers.get("webhook-id"), body.decode(errors="replace"), flush=True)
        self.send_response(204)
        self.end_headers()


HTTPServer(("0.0.0.0", 8000), Receiver).serve_forever()
