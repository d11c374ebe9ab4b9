"""The agent's settings: the same RTB_* variables, defaults and rules as the TypeScript agent
(services/agent/src/config.ts) where they apply. A bad value stops the agent at start with a
message naming the variable, and exit code 2."""

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

KIND_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
KIND_RULE = "1 to 100 letters, digits, '_', '.' or '-'"
MAX_AGENT_KINDS = 500
LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "silent")


class ConfigError(Exception):
    """Every bad variable, as `RTB_X="value": expected ...` lines (secrets shown by length)."""

    def __init__(self, problems: List[Tuple[str, Optional[str], str]]):
        self.problems = problems
        lines = []
        for name, value, expected in problems:
            if value is None:
                shown = "(unset)"
            elif re.search(r"(PASSWORD|TOKEN|SECRET|_KEY)$", name):
                shown = "<%d characters, hidden>" % len(value)
            else:
                shown = '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append("  %s=%s: %s" % (name, shown, expected))
        super().__init__("invalid configuration:\n" + "\n".join(lines))


@dataclass
class Config:
    broker_hosts: List[Tuple[str, int]]
    broker_user: str
    broker_password: str
    broker_vhost: str
    broker_prefix: str
    broker_box: str
    queue_type: str
    delivery_limit: int
    connect_timeout_ms: int
    max_message_bytes: int
    agent_id: Optional[str]
    kinds: Optional[List[str]]
    concurrency: int
    timeout_ms: int
    shutdown_timeout_ms: int
    heartbeat_ms: int
    log_level: str
    log_format: str
    extra: Dict[str, str] = field(default_factory=dict)


def load_config(env: Optional[Dict[str, str]] = None) -> Config:
    env = dict(os.environ if env is None else env)
    problems: List[Tuple[str, Optional[str], str]] = []

    def raw(name: str) -> Optional[str]:
        # Empty counts as unset, as in the TypeScript services.
        value = env.get(name)
        return value if value not in (None, "") else None

    def integer(name: str, default: int, lo: int = 0, hi: int = 2**53 - 1) -> int:
        value = raw(name)
        if value is None:
            return default
        try:
            n = int(value.strip())
        except ValueError:
            problems.append((name, value, "expected an integer"))
            return default
        if n < lo:
            problems.append((name, value, "expected an integer >= %d" % lo))
        elif n > hi:
            problems.append((name, value, "expected an integer <= %d" % hi))
        return n

    def text(name: str, default: str) -> str:
        value = raw(name)
        return default if value is None else value

    def one_of(name: str, values: Tuple[str, ...], default: str) -> str:
        value = raw(name)
        if value is None:
            return default
        if value not in values:
            problems.append((name, value, "expected one of " + ", ".join(values)))
            return default
        return value

    def pattern(name: str, regex: str, rule: str, default: str, max_len: int = 100) -> str:
        value = raw(name)
        if value is None:
            return default
        if len(value) > max_len or not re.match(regex, value):
            problems.append((name, value, rule))
        return value

    hosts: List[Tuple[str, int]] = []
    host_setting = text("RTB_BROKER_HOST", "localhost:5672")
    entries = [e.strip() for e in host_setting.split(",")]
    for i, entry in enumerate(entries):
        m = re.match(r"^(\[[^\]]+\]|[^:]+)(?::(\d+))?$", entry)
        port = int(m.group(2)) if m and m.group(2) else 5672
        if not m or not 1 <= port <= 65535 or (m.group(1).strip("[]"), port) in hosts:
            at = "entry %d of %d, " % (i + 1, len(entries)) if len(entries) > 1 else ""
            problems.append(("RTB_BROKER_HOST", host_setting, '%s"%s" is not host:port (or listed twice): expected host:port, or several separated by commas' % (at, entry)))
            break
        hosts.append((m.group(1).strip("[]"), port))

    kinds = None
    kinds_setting = raw("RTB_AGENT_KINDS")
    if kinds_setting is not None:
        names = [k.strip() for k in kinds_setting.split(",") if k.strip()]
        if not names or any(not KIND_PATTERN.match(n) for n in names):
            problems.append(("RTB_AGENT_KINDS", kinds_setting, "expected a comma-separated list of kinds, each " + KIND_RULE))
        elif len(set(names)) > MAX_AGENT_KINDS:
            problems.append(("RTB_AGENT_KINDS", kinds_setting, "expected at most %d kinds, got %d: run several agents" % (MAX_AGENT_KINDS, len(set(names)))))
        kinds = list(dict.fromkeys(names))

    agent_id = raw("RTB_AGENT_ID")
    if agent_id is not None and len(agent_id) > 200:
        problems.append(("RTB_AGENT_ID", agent_id, "expected at most 200 characters"))

    config = Config(
        broker_hosts=hosts,
        broker_user=text("RTB_BROKER_USER", "guest"),
        broker_password=text("RTB_BROKER_PASSWORD", "guest"),
        broker_vhost=text("RTB_BROKER_VHOST", "/"),
        broker_prefix=pattern("RTB_BROKER_PREFIX", r"^[A-Za-z0-9_.:-]*$", "expected letters, digits, '-', '_', '.' or ':'", ""),
        broker_box=pattern("RTB_BROKER_BOX", r"^[A-Za-z0-9_.:-]+$", "expected a queue name (letters, digits, '-', '_', '.', ':')", "outbox"),
        queue_type=one_of("RTB_BROKER_QUEUE_TYPE", ("classic", "quorum"), "quorum"),
        delivery_limit=integer("RTB_BROKER_DELIVERY_LIMIT", 20, 1),
        connect_timeout_ms=integer("RTB_CONNECT_TIMEOUT_MS", 60_000, 0),
        max_message_bytes=integer("RTB_BROKER_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, 65_536, 512 * 1024 * 1024),
        agent_id=agent_id,
        kinds=kinds,
        concurrency=integer("RTB_AGENT_CONCURRENCY", 4, 1, 10_000),
        timeout_ms=integer("RTB_AGENT_TIMEOUT_MS", 30_000, 1),
        shutdown_timeout_ms=integer("RTB_SHUTDOWN_TIMEOUT_MS", 10_000, 0),
        heartbeat_ms=integer("RTB_HEARTBEAT_MS", 5_000, 100, 10_000),
        log_level=one_of("RTB_LOG_LEVEL", LOG_LEVELS, "info"),
        log_format=one_of("RTB_LOG_FORMAT", ("json", "pretty"), "json"),
    )
    processing_timeout = raw("RTB_PROCESSING_TIMEOUT_MS")
    if processing_timeout is not None:
        try:
            if config.timeout_ms >= int(processing_timeout):
                problems.append(("RTB_AGENT_TIMEOUT_MS", raw("RTB_AGENT_TIMEOUT_MS"), "expected a value below RTB_PROCESSING_TIMEOUT_MS (the api expires an attempt processing that long, and it would run again)"))
        except ValueError:
            problems.append(("RTB_PROCESSING_TIMEOUT_MS", processing_timeout, "expected an integer"))
    if problems:
        raise ConfigError(problems)
    return config
