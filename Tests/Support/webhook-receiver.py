#!/usr/bin/env python3
"""A webhook receiver for the tests: checks each delivery's signature itself (HMAC-SHA256 of "T.BODY" under the
shared secret, from X-Buildd-Signature: t=T,sha256=HEX) and appends what it got to OUT as a JSON line:
{"ok": true, "key": Idempotency-Key, "event": the body} or {"ok": false, "why": ...} (answered 401).
With --status N every delivery is answered N (a receiver that is broken), and nothing is recorded.

usage: webhook-receiver.py PORT SECRET OUT [--status N]"""
import hashlib
import hmac
import http.server
import json
import sys

port, secret, out = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
forced = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--status" else None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if forced is not None:
            self.answer(forced)
            return
        fields = dict(part.split("=", 1) for part in self.headers.get("X-Buildd-Signature", "").split(",") if "=" in part)
        expected = hmac.new(secret, fields.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
        if "t" not in fields or not hmac.compare_digest(expected, fields.get("sha256", "")):
            self.record({"ok": False, "why": "bad signature", "header": self.headers.get("X-Buildd-Signature", "")})
            self.answer(401)
            return
        self.record({"ok": True, "key": self.headers.get("Idempotency-Key"), "event": json.loads(body)})
        self.answer(204)

    def record(self, line):
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer.allow_reuse_address = True
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
print("listening", flush=True)
server.serve_forever()
