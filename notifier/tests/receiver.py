"""A webhook receiver that verifies every delivery with the official Standard Webhooks library.

Usage: receiver.py PORT SECRET. Prints one JSON line per request:
{"verified": true, "id": ..., "type": ..., "body": ...} or {"verified": false, "error": ...},
and answers 204 when the signature verifies, 400 when it does not.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

PORT = int(sys.argv[1])
WEBHOOK = Webhook(sys.argv[2])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = WEBHOOK.verify(body, headers)
            line = {"verified": True, "id": headers["webhook-id"], "type": payload["type"],
                    "body": body.decode()}
            status = 204
        except Exception as error:  # noqa: BLE001 - every failure is reported to the test
            line = {"verified": False, "error": repr(error)}
            status = 400
        print(json.dumps(line), flush=True)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
