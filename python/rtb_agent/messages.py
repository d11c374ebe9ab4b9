"""The message contracts this agent speaks, as packages/protocol/src/messages.ts defines them:
job messages in (one unit, or a batch of one kind), status messages out (reports and
heartbeats), cancels from the control exchange. Every check here mirrors a zod schema there."""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from .config import KIND_PATTERN

#: StatusUpdate.error.message is at most this long, counted as JavaScript counts (UTF-16 code units).
ERROR_MESSAGE_MAX = 4_000
#: BatchJobMessage.units holds at most this many units.
MAX_JOB_UNITS = 1_000
#: messages.ts's TRACEPARENT_PATTERN: W3C trace context, version 00 (what every schema takes).
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
#: A trace id or span id of zeros is invalid.
_ZEROS = re.compile(r"^00-(?:0{32}-|[0-9a-f]{32}-0{16}-)")


def valid_traceparent(value: Any) -> Optional[str]:
    """The value if it is a valid version-00 traceparent, else None (ignored, as W3C says)."""
    if isinstance(value, str) and TRACEPARENT.match(value) and not _ZEROS.match(value):
        return value
    return None


class InvalidMessage(ValueError):
    """A message that fails its schema: dead-lettered (jobs) or ignored (control)."""


@dataclass
class JobUnit:
    unit_id: int
    attempt: int
    payload: Any
    deps: Dict[str, Any]
    traceparent: Optional[str]


def _positive_int(value: Any, path: str) -> int:
    # JSON true is a bool, which Python counts as an int: not a unit id.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidMessage("%s: expected a positive integer" % path)
    return value


def _unit(raw: Any, path: str, outer_traceparent: Optional[str]) -> JobUnit:
    if not isinstance(raw, dict):
        raise InvalidMessage("%s: expected an object" % (path or "(message)"))
    prefix = path + "." if path else ""
    deps = raw.get("deps")
    if deps is not None and not isinstance(deps, dict):
        raise InvalidMessage("%sdeps: expected an object" % prefix)
    traceparent = outer_traceparent
    if "traceparent" in raw:
        # Optional, and read as the schemas read it: one that is not a valid version-00
        # traceparent counts as absent (W3C Trace Context: a malformed one is ignored), so it is
        # never echoed into a report.
        traceparent = valid_traceparent(raw["traceparent"])
    return JobUnit(
        unit_id=_positive_int(raw.get("unitId"), prefix + "unitId"),
        attempt=_positive_int(raw.get("attempt"), prefix + "attempt"),
        payload=raw.get("payload"),
        deps=deps or {},
        traceparent=traceparent,
    )


def parse_job(body: bytes, header_traceparent: Optional[str] = None) -> Tuple[str, List[JobUnit]]:
    """A job message of either form (told by its `units` field): its kind and its units."""
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage("body is not valid JSON")
    if not isinstance(msg, dict):
        raise InvalidMessage("(message): expected an object")
    if msg.get("v") != 1 or isinstance(msg.get("v"), bool):
        raise InvalidMessage("v: expected 1")
    if msg.get("type") != "job":
        raise InvalidMessage('type: expected "job"')
    kind = msg.get("kind")
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
        raise InvalidMessage("kind: expected 1 to 100 letters, digits, '_', '.' or '-'")
    outer = valid_traceparent(header_traceparent)
    if "units" in msg:
        units = msg["units"]
        if not isinstance(units, list) or not 1 <= len(units) <= MAX_JOB_UNITS:
            raise InvalidMessage("units: expected an array of 1 to %d units" % MAX_JOB_UNITS)
        return kind, [_unit(u, "units.%d" % i, None) for i, u in enumerate(units)]
    return kind, [_unit(msg, "", outer)]


def parse_cancel(body: bytes) -> List[Tuple[int, int]]:
    """The attempts a control message cancels; [] for a type this agent does not know."""
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage("body is not valid JSON")
    if not isinstance(msg, dict) or msg.get("v") != 1:
        raise InvalidMessage("v: expected 1")
    if msg.get("type") != "cancel":
        return []
    units = msg.get("units")
    if not isinstance(units, list) or not units:
        raise InvalidMessage("units: expected a non-empty array")
    return [(_positive_int(u.get("unitId") if isinstance(u, dict) else None, "units.%d.unitId" % i), _positive_int(u.get("attempt"), "units.%d.attempt" % i)) for i, u in enumerate(units)]


def unit_update(unit: JobUnit, status: str, **fields: Any) -> Dict[str, Any]:
    """A StatusUpdate for this unit's attempt, carrying the trace context its job did (common to
    every hop: the api continues the unit's trace from it)."""
    update: Dict[str, Any] = dict({"unitId": unit.unit_id, "attempt": unit.attempt, "status": status, "at": now_iso()}, **fields)
    if unit.traceparent:
        update["traceparent"] = unit.traceparent
    return update


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cut_message(message: str, limit: int = ERROR_MESSAGE_MAX) -> str:
    """At most `limit` UTF-16 code units (as zod's .max counts), never splitting a character."""
    used = 0
    for i, ch in enumerate(message):
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > limit:
            return message[:i]
        used += width
    return message


def encode(msg: Dict[str, Any]) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; the caller turns the ValueError into a permanent error.
    return json.dumps(msg, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def status_message(source: Dict[str, Any], updates: List[Dict[str, Any]], **extra: Any) -> bytes:
    return encode(dict({"v": 1, "type": "status", "source": source, "updates": updates}, **extra))
