"""The `conformance` kind's handler, as services/agent/src/conformance.ts does it: what the
conformance suite (npm run conformance) asks of every agent it checks. The payload says:

- {"do":"succeed","result":X}: succeed with X, exactly (null if absent);
- {"do":"fail","message":M,"retryable":B}: fail with M, retryable or not;
- {"do":"sleep","ms":N} or {"do":"sleep","until":T} (ms since the epoch): wait, unless the
  attempt is aborted first, then succeed with "result";
- "attempts":K with fail or sleep: only on attempts 1..K; a later one succeeds with {"attempt": n}.
"""

import time
from typing import Any

from .job import Job, PermanentError

KIND = "conformance"


def conformance_handler(job: Job) -> Any:
    p = job.payload if isinstance(job.payload, dict) else {}
    action = p.get("do")
    attempts = p.get("attempts")
    if isinstance(attempts, int) and job.attempt > attempts and action in ("fail", "sleep"):
        return {"attempt": job.attempt}
    if action == "succeed":
        return p.get("result")
    if action == "fail":
        if not isinstance(p.get("message"), str):
            raise PermanentError("payload.message: expected a string")
        if p.get("retryable") is False:
            raise PermanentError(p["message"])
        raise RuntimeError(p["message"])
    if action == "sleep":
        if isinstance(p.get("until"), (int, float)):
            seconds = p["until"] / 1000 - time.time()
        elif isinstance(p.get("ms"), (int, float)):
            seconds = p["ms"] / 1000
        else:
            raise PermanentError("payload.ms: expected a number (or payload.until)")
        if not job.sleep(seconds):
            raise RuntimeError("aborted (%s)" % job.abort_reason)
        return p.get("result")
    raise PermanentError("payload.do: expected succeed, fail or sleep, got %s" % ("null" if action is None else repr(action)))
