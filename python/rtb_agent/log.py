"""One structured logger per process, writing lines like the TypeScript services' (pino's
levels and fields): JSON by default, or `time level msg key=value` with RTB_LOG_FORMAT=pretty."""

import json
import sys
import threading
import time
from typing import Any

LEVELS = {"trace": 10, "debug": 20, "info": 30, "warn": 40, "error": 50, "fatal": 60, "silent": 100}


class Logger:
    def __init__(self, level: str = "info", fmt: str = "json", **bindings: Any):
        self._min = LEVELS[level]
        self._fmt = fmt
        self._bindings = bindings
        self._lock = threading.Lock()

    def child(self, **bindings: Any) -> "Logger":
        child = Logger.__new__(Logger)
        child._min, child._fmt, child._lock = self._min, self._fmt, self._lock
        child._bindings = dict(self._bindings, **bindings)
        return child

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self._min

    def _write(self, level: str, msg: str, fields: Any) -> None:
        if not self.enabled(level):
            return
        record = dict({"level": LEVELS[level], "time": int(time.time() * 1000)}, **self._bindings)
        record.update(fields)
        record["msg"] = msg
        if self._fmt == "json":
            line = json.dumps(record, ensure_ascii=False, default=str)
        else:
            rest = " ".join("%s=%s" % (k, v) for k, v in record.items() if k not in ("level", "time", "msg"))
            line = "%s %s %s %s" % (time.strftime("%H:%M:%S"), level.upper(), msg, rest)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def debug(self, msg: str, **fields: Any) -> None:
        self._write("debug", msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._write("info", msg, fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self._write("warn", msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._write("error", msg, fields)
