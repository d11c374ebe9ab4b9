"""An rtb agent in Python: serves `thumbnail` (an example of real work) and `conformance`
(what `npm run conformance` drives). Run it from the repository root:

    PYTHONPATH=python /usr/bin/python3 examples/python-agent/agent.py

`--misbehave WAY` breaks it on purpose, so the conformance suite can be seen to fail:
`long-errors` sends error messages uncut (over the protocol's 4000), `error-on-shutdown`
reports the units in hand as errors on SIGTERM instead of handing them back, `no-traceparent`
leaves the job's traceparent out of its reports.
"""

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import rtb_agent  # noqa: E402
from rtb_agent import PermanentError, conformance_handler, run_agent  # noqa: E402


def thumbnail(job):
    """{"url": "...", "width": 320}: pretend to fetch and scale an image, honouring cancels."""
    url = job.payload.get("url") if isinstance(job.payload, dict) else None
    if not isinstance(url, str):
        raise PermanentError("payload.url: expected a string")
    width = job.payload.get("width", 320)
    if not job.sleep(0.05):
        raise RuntimeError("aborted (%s)" % job.abort_reason)
    digest = hashlib.sha256(("%s@%s" % (url, width)).encode()).hexdigest()[:16]
    return {"thumbnail": "thumbs/%s.jpg" % digest, "width": width}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--misbehave", choices=["long-errors", "error-on-shutdown", "no-traceparent"], action="append", default=[])
    args = parser.parse_args()
    if "long-errors" in args.misbehave:
        rtb_agent.agent.cut_message = lambda message, limit=0: message
    if "no-traceparent" in args.misbehave:
        update = rtb_agent.agent.unit_update
        rtb_agent.agent.unit_update = lambda unit, status, **fields: {k: v for k, v in update(unit, status, **fields).items() if k != "traceparent"}
    if "error-on-shutdown" in args.misbehave:
        original = rtb_agent.Agent._run_handler

        def run_handler(self, kind, unit, attempt, log):
            final = original(self, kind, unit, attempt, log)
            if final is None and attempt.reason == "shutdown":
                return rtb_agent.messages.unit_update(unit, "error", error={"message": "agent shutting down", "retryable": True})
            return final

        rtb_agent.Agent._run_handler = run_handler
    run_agent({"thumbnail": thumbnail, "conformance": conformance_handler})


if __name__ == "__main__":
    main()
