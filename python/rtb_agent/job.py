"""What a handler gets (Job) and throws (PermanentError), and a running attempt's abort."""

import threading
from typing import Any, Callable, Optional

from .log import Logger
from .messages import JobUnit


class PermanentError(Exception):
    """Raise this when another attempt cannot help (a bad payload ...): the unit ends as `error`."""


class Job:
    """One attempt at one unit, as a handler sees it. Delivery is at least once: the same unit
    may reach a handler more than once (a retry, a job handed back), so work should be safe to repeat."""

    def __init__(self, unit: JobUnit, kind: str, aborted: threading.Event, reason: Callable[[], Optional[str]], logger: Logger):
        self.unit_id = unit.unit_id
        self.attempt = unit.attempt
        self.kind = kind
        #: The unit's payload as enqueued (any JSON).
        self.payload = unit.payload
        #: Results of the unit's dependencies that succeeded, by step name (or ref, or id); {} without any.
        self.deps = unit.deps
        #: The W3C trace context the job carried for this unit, if any.
        self.traceparent = unit.traceparent
        #: Set when the attempt is aborted: cancelled by an operator, over RTB_AGENT_TIMEOUT_MS, or the agent shutting down. Stop, and raise.
        self.aborted = aborted
        self._reason = reason
        self.logger = logger

    @property
    def abort_reason(self) -> Optional[str]:
        """"cancelled", "timeout", "shutdown" or "lost" (the broker connection) once aborted; None before."""
        return self._reason()

    def sleep(self, seconds: float) -> bool:
        """Wait, unless aborted first: True if the whole time passed, False if aborted."""
        return not self.aborted.wait(max(0.0, seconds))


Handler = Callable[[Job], Any]


class Attempt:
    """A running attempt's abort: the first reason wins."""

    def __init__(self) -> None:
        self.aborted = threading.Event()
        self.wake = threading.Event()
        self.reason: Optional[str] = None
        self._lock = threading.Lock()

    def abort(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self.aborted.set()
        self.wake.set()
