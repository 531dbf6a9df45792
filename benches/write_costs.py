#!/usr/bin/env python3
"""What one API write of each kind on the flag path costs on the local control plane.

Usage: source target/cluster/env && python3 benches/write_costs.py [ROUNDS]

One keep-alive HTTPS connection (as the operator's client keeps one), the admin's
credentials from $KUBECONFIG, a namespace of its own. For each kind of call: ROUNDS calls
(default 60), the first 5 dropped as warm-up; prints p50 and min. The calls are those of
a rollback's path and of its alternatives: a RolloutGuard status patch (the slot's claim
today), a RollbackRequest status patch, a ConfigMap merge patch (the flags write, and the
direct patch the rollback bench compares with), a Secret create (the snapshot), a Lease
create and patch (a cheaper slot). Needs the CRDs installed (any test run installs them).
"""
import http.client
import json
import os
import re
import ssl
import statistics
import sys
import time


def kubeconfig():
    text = open(os.environ["KUBECONFIG"]).read()

    def field(name):
        return re.search(rf"^\s*{name}:\s*(\S+)", text, re.M).group(1)

    server = re.match(r"https://([^:/]+):(\d+)", field("server"))
    return server.group(1), int(server.group(2)), field("certificate-authority"), field(
        "client-certificate"), field("client-key")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    host, port, ca, cert, key = kubeconfig()
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection(host, port, context=ctx)

    def call(method, path, body=None, content_type="application/merge-patch+json"):
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        start = time.perf_counter()
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        data = response.read()
        took = (time.perf_counter() - start) * 1000
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {data[:300]!r}")
        return took

    def create(path, obj):
        return call("POST", path, obj, "application/json")

    ns = f"write-costs-{os.getpid()}"
    create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    core = f"/api/v1/namespaces/{ns}"
    crds = f"/apis/rollguard.dev/v1alpha1/namespaces/{ns}"
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    create(f"{core}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "ff"}, "data": {"f": "true", "other": "x"}})
    create(f"{crds}/rolloutguards", {"apiVersion": "rollguard.dev/v1alpha1", "kind": "RolloutGuard",
                                     "metadata": {"name": "g"},
                                     "spec": {"flags": {"configMapRef": {"name": "ff"}, "guarded": ["f"]}}})
    # A status of the size a guard carries: its conditions and five triggers.
    conditions = [{"type": t, "status": "True", "reason": "Evaluating", "observedGeneration": 1,
                   "lastTransitionTime": "2026-12-07T00:00:00Z", "message": f"{t}: as of the last evaluation"}
                  for t in ["Ready", "Healthy", "TriggersBreaching", "RolledBack", "FlagsDrifted",
                            "PrometheusReachable", "Stable"]]
    triggers = [{"name": f"t{i}", "value": 0.004, "threshold": 0.01, "breaching": False} for i in range(5)]
    call("PATCH", f"{crds}/rolloutguards/g/status",
         {"status": {"phase": "Monitoring", "conditions": conditions, "triggers": triggers,
                     "lastEvaluationTime": "2026-12-07T00:00:00Z"}})
    create(f"{crds}/rollbackrequests", {"apiVersion": "rollguard.dev/v1alpha1", "kind": "RollbackRequest",
                                        "metadata": {"name": "r"},
                                        "spec": {"guardRef": {"name": "g"}, "requestedBy": "bench"}})
    create(leases, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "slot"},
                    "spec": {"holderIdentity": "r"}})

    def measure(name, one):
        took = sorted(one(i) for i in range(rounds))[5:]
        print(f"{name:66s} p50 {statistics.median(took):6.2f} ms  min {took[0]:6.2f} ms")

    print(f"write costs, {rounds - 5} calls each, one keep-alive connection, namespace {ns}:")
    measure("ConfigMap merge patch (flags write, direct)",
            lambda i: call("PATCH", f"{core}/configmaps/ff", {"data": {"other": f"x{i}"}}))
    measure("Secret create (snapshot)",
            lambda i: create(f"{core}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                 "metadata": {"name": f"g-snap-{i}"}, "data": {"a": "eA=="}}))
    measure("RolloutGuard status merge patch (claim; 7 conditions, 5 triggers)",
            lambda i: call("PATCH", f"{crds}/rolloutguards/g/status", {"status": {"activeRollback": f"r{i}"}}))
    measure("RollbackRequest status merge patch",
            lambda i: call("PATCH", f"{crds}/rollbackrequests/r/status", {"status": {"message": f"m{i}"}}))
    measure("Lease create",
            lambda i: create(leases, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                      "metadata": {"name": f"slot-{i}"}, "spec": {"holderIdentity": "r"}}))
    measure("Lease merge patch",
            lambda i: call("PATCH", f"{leases}/slot", {"spec": {"holderIdentity": f"r{i}"}}))


if __name__ == "__main__":
    main()
