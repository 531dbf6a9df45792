#!/usr/bin/env python3
"""A webhook receiver that verifies with the Standard Webhooks reference library (PyPI
`standardwebhooks`), for rollguard's integration tests (tests/notify_e2e.rs). Run it with
the venv that `tests/cluster/build-tools.sh python-tools` builds.

    standardwebhooks_receiver.py serve CONFIG.json
        CONFIG: {"record": "<file>", "verifiers": [{"name": "...", "secret": "...",
                  "form": "str" | "bytes"}, ...]}
        Listens on 127.0.0.1, port chosen by the system, and prints one line
        `PORT <port> standardwebhooks <version>`. Every POST is checked by every verifier with
        `standardwebhooks.Webhook(secret).verify(body, headers)`, where `secret` is given to
        `Webhook` as the string itself (form "str": the library's own reading, `whsec_<base64>`
        or bare base64) or as its UTF-8 bytes (form "bytes": a raw key). The answer is 200 if
        the verifier named by the request path (`POST /<name>`) accepted, 401 otherwise (404
        for an unknown name). One JSON line per POST is appended to the record file before the
        answer is sent: {"path", "headers", "body" (base64), "verdicts": {name: "accepted" |
        "rejected: <why>"}, "answered"}.

    standardwebhooks_receiver.py verify
        stdin: {"secret": "...", "form": "str" | "bytes", "headers": {...}, "body": "<base64>"}
        Prints `accepted` (exit 0) or `rejected: <why>` (exit 1).
"""

import base64
import http.server
import importlib.metadata
import json
import sys
import threading

import standardwebhooks


def verdict(secret, form, body, headers):
    try:
        key = secret.encode("utf-8") if form == "bytes" else secret
        standardwebhooks.Webhook(key).verify(body, headers)
        return "accepted"
    except Exception as e:  # the library's refusal, or a secret it cannot read
        return f"rejected: {type(e).__name__}: {e}"


def serve(config_path):
    with open(config_path) as f:
        config = json.load(f)
    verifiers = config["verifiers"]
    record = open(config["record"], "a", buffering=1)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k: v for k, v in self.headers.items()}
            verdicts = {
                v["name"]: verdict(v["secret"], v.get("form", "str"), body, headers)
                for v in verifiers
            }
            name = self.path.strip("/")
            if name not in verdicts:
                answered = 404
            elif verdicts[name] == "accepted":
                answered = 200
            else:
                answered = 401
            line = json.dumps(
                {
                    "path": self.path,
                    "headers": headers,
                    "body": base64.b64encode(body).decode(),
                    "verdicts": verdicts,
                    "answered": answered,
                }
            )
            with lock:
                record.write(line + "\n")
                record.flush()
            reply = (verdicts.get(name, "no such verifier") + "\n").encode()
            self.send_response(answered)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    version = importlib.metadata.version("standardwebhooks")
    print(f"PORT {server.server_address[1]} standardwebhooks {version}", flush=True)
    server.serve_forever()


def verify_once():
    request = json.load(sys.stdin)
    result = verdict(
        request["secret"],
        request.get("form", "str"),
        base64.b64decode(request["body"]),
        request["headers"],
    )
    print(result)
    sys.exit(0 if result == "accepted" else 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "verify":
        verify_once()
    else:
        sys.exit(__doc__)
