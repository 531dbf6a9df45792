"""Evaluates a flagd document with flagd's own Python evaluator (PyPI openfeature-flagd-core).

Reads {"document": "<flagd JSON text>", "contexts": [{"targetingKey": ..., attribute: ...}, ...]}
on stdin and prints {"flag name": ["<result>", ...]} with one result per context, each the
canonical JSON text of {"value", "variant", "reason", "error"}. Numbers are printed as Python
holds them: integers exactly, floats in their shortest round-trip form, so two documents whose
numbers differ in any digit give different results. tests/flagd_conformance.rs runs it in the
venv `tests/cluster/build-tools.sh flagd-tools` builds.
"""

import json
import sys

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError, TypeMismatchError


def resolve(core, key, variants, ctx):
    """The flag's value through the typed resolver an application of its type would call."""
    values = list(variants.values())
    if all(isinstance(v, bool) for v in values):
        return core.resolve_boolean_value(key, False, ctx)
    if all(isinstance(v, str) for v in values):
        return core.resolve_string_value(key, "code-default", ctx)
    if all(isinstance(v, (dict, list)) for v in values):
        return core.resolve_object_value(key, {"code": "default"}, ctx)
    try:
        return core.resolve_integer_value(key, 0, ctx)
    except TypeMismatchError:
        return core.resolve_float_value(key, 0.0, ctx)


def main():
    request = json.load(sys.stdin)
    text = request["document"]
    core = FlagdCore()
    core.set_flags(text)
    flags = json.loads(text)["flags"]
    out = {}
    for key, flag in flags.items():
        results = []
        for attributes in request["contexts"]:
            attributes = dict(attributes)
            ctx = EvaluationContext(attributes.pop("targetingKey", None), attributes)
            try:
                r = resolve(core, key, flag["variants"], ctx)
                result = {
                    "value": r.value,
                    "variant": r.variant,
                    "reason": getattr(r.reason, "value", r.reason),
                    "error": None,
                }
            except OpenFeatureError as e:
                result = {"value": None, "variant": None, "reason": "ERROR", "error": f"{type(e).__name__}: {e}"}
            results.append(json.dumps(result, sort_keys=True, ensure_ascii=False))
        out[key] = results
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
