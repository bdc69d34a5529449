"""Helm's own engine for the chart's tests: render or lint a chart, JSON in and JSON out.

Reads one request from standard input and writes one answer to standard output:

    {"command": "render", "chart": DIR, "name": NAME, "namespace": NS, "values": {...}}
        -> {"manifests": {"<chart>/templates/x.yaml": "...", ...}, "values": {merged values}}
    {"command": "lint", "chart": DIR, "namespace": NS, "values": {...},
     "strict": true, "kube_version": "v1.33.0"}
        -> {"total_charts_linted": N, "messages": [{"severity", "path", "error"}], "errors": []}

A failure (a template that does not render, values Helm refuses) is one line on standard error
and exit status 1. Run by tests/src/helm.rs with the virtualenv `cargo xtask test` makes.
"""

import json
import sys

import helm_python as helm


def render(request):
    with helm.Chart.load(request["chart"]) as chart:
        values = request.get("values") or {}
        manifests = chart.render(
            values=values,
            name=request["name"],
            namespace=request["namespace"],
            is_install=True,
        )
        return {"manifests": manifests, "values": chart.merge_values(values)}


def lint(request):
    return helm.lint(
        request["chart"],
        request.get("values") or {},
        strict=request.get("strict", True),
        namespace=request.get("namespace"),
        kube_version=request.get("kube_version"),
    )


def main():
    request = json.load(sys.stdin)
    commands = {"render": render, "lint": lint}
    command = commands.get(request.get("command"))
    if command is None:
        print(f"unknown command {request.get('command')!r}", file=sys.stderr)
        return 1
    try:
        answer = command(request)
    except helm.HelmError as e:
        print(f"helm {request['command']}: {e}".replace("\n", " "), file=sys.stderr)
        return 1
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
