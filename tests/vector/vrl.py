"""Vector's remap language for the Vector config's test: run one VRL program on events.

Reads one request from standard input and writes one answer to standard output:

    {"program": "<VRL source>", "events": [{...}, ...]}
        -> {"outcomes": [{"event": {...}} | {"aborted": true} | {"error": "..."}, ...]}

The program is compiled once by VRL's own compiler (pyVRL: Vector's `vrl` crate), as Vector's
`remap` transform compiles its `source`; a program that does not compile is one message on
standard error and exit status 1. Each event then runs through it: its outcome is the event as
the program left it (what `remap` passes on), `aborted` (what `remap` drops with
`drop_on_abort: true`), or a runtime error (which `remap` would pass on unchanged: a program
that can fail at run time is a bug the test shows).
"""

import json
import sys

import pyvrl


def main():
    request = json.load(sys.stdin)
    try:
        # `remap` answers the program's last value; Vector passes on the event, `.`.
        program = pyvrl.Transform(request["program"] + "\n.\n")
    except ValueError as e:
        print(f"the VRL program does not compile:\n{e}", file=sys.stderr)
        sys.exit(1)
    outcomes = []
    for event in request["events"]:
        try:
            outcomes.append({"event": program.remap(event)})
        except ValueError as e:
            if str(e).strip() == "remap failure: aborted":
                outcomes.append({"aborted": True})
            else:
                outcomes.append({"error": str(e)})
    json.dump({"outcomes": outcomes}, sys.stdout)


if __name__ == "__main__":
    main()
