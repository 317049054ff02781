#!/usr/bin/env python3
"""Runs every PromQL expression of a Grafana dashboard against a Prometheus and checks each
returns a series with a non-zero value (scripts/dashboard-check.sh drives it).

Usage: dashboard_check.py DASHBOARD_JSON PROMETHEUS_URL
Template variables become match-all regexes (`$cluster` -> `.*`), `$__rate_interval` becomes
RATE_WINDOW (default 5m). Every metric name a query uses must exist in Prometheus. Prints one
PASS/FAIL line per expression; exits 1 on any failure.
"""

import json
import os
import re
import sys
import urllib.parse
import urllib.request

RATE_WINDOW = os.environ.get("RATE_WINDOW", "5m")
# Expressions allowed to be zero under the scripted traffic, and why. Keep this short.
MAY_BE_ZERO = {
    "vela_raft_apply_lag_entries": "a healthy node applies what is committed at once",
    "vela_raft_leader_changes_total": "a standalone's single replica never changes leader",
    "vela_route_errors_total": "a route whose target is up fails nothing",
    "vela_route_lag_messages": "a route that keeps up has nothing left to copy",
}


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def exprs(dashboard):
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", "?"), t["expr"]
    yield from walk(dashboard["panels"])


def concrete(expr):
    expr = expr.replace("$__rate_interval", RATE_WINDOW)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def metric_names(expr):
    names = set()
    for word in re.findall(r"\b(?:rocketmq|vela)_[a-z0-9_]+\b", expr):
        names.add(re.sub(r"_(bucket|count|sum)$", "", word) if word.endswith(("_bucket", "_count", "_sum")) else word)
    return names


def main():
    dashboard = json.load(open(sys.argv[1]))
    prometheus = sys.argv[2].rstrip("/")
    known = set(get(f"{prometheus}/api/v1/label/__name__/values")["data"])
    failures = 0
    checked = 0
    for title, expr in exprs(dashboard):
        checked += 1
        query = concrete(expr)
        missing = [n for n in metric_names(expr)
                   if n not in known and f"{n}_bucket" not in known and f"{n}_count" not in known]
        if missing:
            print(f"FAIL {title}: no such metric {missing} in {query}")
            failures += 1
            continue
        result = get(f"{prometheus}/api/v1/query?query={urllib.parse.quote(query)}")
        if result.get("status") != "success":
            print(f"FAIL {title}: {result.get('error')} in {query}")
            failures += 1
            continue
        values = [float(s["value"][1]) for s in result["data"]["result"]]
        nonzero = [v for v in values if v == v and v != 0.0]  # NaN is not a value
        excused = [why for name, why in MAY_BE_ZERO.items() if name in expr]
        if nonzero:
            print(f"PASS {title}: {len(values)} series, e.g. {nonzero[0]:g}")
        elif excused and values:
            print(f"PASS {title}: {len(values)} series, all zero ({excused[0]})")
        else:
            print(f"FAIL {title}: {len(values)} series, none non-zero: {query}")
            failures += 1
    print(f"dashboard check: {checked - failures} of {checked} expressions pass")
    sys.exit(1 if failures or checked == 0 else 0)


if __name__ == "__main__":
    main()
