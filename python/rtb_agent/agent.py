"""An rtb agent in Python, on pika's BlockingConnection: the same protocol as the TypeScript
agent (services/agent/src/worker.ts), for any team that writes its handlers in Python.

Threads: pika's BlockingConnection is not thread-safe, so one thread (the one that calls
`run`) owns the connection and does all broker I/O: it takes deliveries, publishes every
report through a confirm channel, acks, sends heartbeats and hears cancels. Each unit runs on
a thread of its own, its handler on another (so a handler that overruns its time or ignores
its cancel can be left behind, as the TypeScript agent leaves a promise); those threads ask
the I/O thread for a publish with `connection.add_callback_threadsafe` and wait for its
confirm. A job is acked only once every report of its units is confirmed.
"""

import os
import random
import signal
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Tuple

import pika
import pika.exceptions

from .config import KIND_PATTERN, KIND_RULE, MAX_AGENT_KINDS, Config, ConfigError
from .job import Attempt, Handler, Job, PermanentError
from .log import Logger
from .topology import Topology
from .messages import InvalidMessage, JobUnit, cut_message, encode, now_iso, parse_cancel, parse_job, status_message, unit_update

#: Cancelled attempts remembered (the oldest forgotten first), and for how long: as cancellations.ts.
MAX_REMEMBERED = 100_000
REMEMBER_S = 3600.0


class _Stopped(Exception):
    """SIGTERM while (re)connecting: nothing is in hand, so the agent just ends."""


#: The longest pause before a job whose reports failed is handed back, in seconds.
RETRY_PAUSE_MAX = 30.0


def retry_pause(deliveries: int) -> float:
    """Seconds to wait before handing back a job delivered `deliveries` times before: 1 s, doubling, capped."""
    return min(2.0 ** min(max(deliveries, 0), 30), RETRY_PAUSE_MAX)


def _delivery_count(props: Any) -> int:
    """The broker's count of a job's earlier deliveries: quorum queues' x-delivery-count, and
    x-acquired-count from RabbitMQ 4.3 (where a requeue no longer counts as a failed delivery)."""
    headers = getattr(props, "headers", None) or {}

    def count(key: str) -> int:
        n = headers.get(key, 0)
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0

    return max(count("x-delivery-count"), count("x-acquired-count"))


class _JobInHand:
    def __init__(self, tag: int, kind: str, units: List[JobUnit], generation: int, deliveries: int = 0):
        self.tag = tag
        #: The broker's count of its earlier deliveries (x-delivery-count, quorum queues).
        self.deliveries = deliveries
        #: Which connection it came on: its delivery tag means nothing on a later one.
        self.generation = generation
        self.kind = kind
        self.units = units
        self.outcomes: Dict[int, Tuple[str, bool]] = {}


class Agent:
    def __init__(self, handlers: Dict[str, Handler], config: Config, logger: Optional[Logger] = None):
        served = dict(handlers)
        for kind in served:
            if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
                raise ValueError("handler kind %r: expected %s" % (kind, KIND_RULE))
        if len(served) > MAX_AGENT_KINDS:
            raise ValueError("an agent serves at most %d kinds (its heartbeat names them all); got %d handlers: run several agents" % (MAX_AGENT_KINDS, len(served)))
        if config.kinds is not None:
            missing = [k for k in config.kinds if k not in served]
            if missing:
                raise ConfigError([("RTB_AGENT_KINDS", ",".join(config.kinds), "kinds with a handler (%s); no handler for %s" % (", ".join(served) or "none", ", ".join(missing)))])
            served = {k: served[k] for k in config.kinds}
        self.config = config
        self.handlers = served
        self.id = config.agent_id or "agent-%s-%d" % (socket.gethostname(), os.getpid())
        self.log = (logger or Logger(config.log_level, config.log_format, service="agent")).child(agentId=self.id)
        self.source = {"service": "agent", "id": self.id, "startedAt": now_iso()}
        self.topology = Topology(config)
        self.dead_lettered = 0
        self._slots = {k: threading.BoundedSemaphore(config.concurrency) for k in served}
        self._jobs: Dict[int, _JobInHand] = {}
        self._running: Dict[Tuple[int, int], Attempt] = {}
        self._cancelled: "OrderedDict[Tuple[int, int], float]" = OrderedDict()
        self._lock = threading.Lock()
        self._abort_all = threading.Event()
        self._stopping = False
        self._signals = 0
        self._kinds_announced = False
        self._next_beat = 0.0
        self._conn: Optional[pika.BlockingConnection] = None
        self._consumer_tags: List[str] = []
        self._generation = 0

    # ---- the broker ------------------------------------------------------------------

    def _connect(self) -> pika.BlockingConnection:
        c = self.config
        deadline = time.monotonic() + c.connect_timeout_ms / 1000
        credentials = pika.PlainCredentials(c.broker_user, c.broker_password)
        attempt = 0
        while True:
            host, port = c.broker_hosts[attempt % len(c.broker_hosts)]
            attempt += 1
            try:
                params = pika.ConnectionParameters(host=host, port=port, virtual_host=c.broker_vhost, credentials=credentials, heartbeat=15, client_properties={"connection_name": "rtb agent " + self.id})
                return pika.BlockingConnection(params)
            except pika.exceptions.AMQPConnectionError as err:
                if self._stopping:
                    raise _Stopped()
                if time.monotonic() >= deadline:
                    raise SystemExit("agent: cannot connect to RabbitMQ at %s:%d (RTB_BROKER_HOST): %s" % (host, port, err or type(err).__name__))
                self.log.warn("broker not reachable; trying again", host="%s:%d" % (host, port), err=str(err) or type(err).__name__)
                time.sleep(min(2.0, 0.2 * attempt) * (0.5 + random.random()))

    def _setup(self) -> None:
        conn = self._connect()
        self._conn = conn
        self._pub = conn.channel()
        self.topology.declare(self._pub)
        self._pub.confirm_delivery()
        self._beat()
        self._ch = conn.channel()
        # Listening before consuming jobs: a cancel heard first drops its job when it arrives.
        control = self.topology.declare_control_queue(self._ch)
        self._ch.basic_consume(control, self._on_control, auto_ack=True)
        # Per consumer: RTB_AGENT_CONCURRENCY jobs in hand per kind, as the TypeScript agent.
        self._ch.basic_qos(prefetch_count=self.config.concurrency)
        for kind in self.handlers:
            queue = self.topology.declare_job_queue(self._ch, kind)
            self._consumer_tags.append(self._ch.basic_consume(queue, lambda ch, m, props, body, kind=kind: self._on_job(kind, m, props, body)))
        # Its queues exist and are consumed: units of these kinds waiting for an agent may come.
        self._kinds_announced = True
        self._beat()

    def _publish(self, exchange: str, key: str, body: bytes, traceparent: Optional[str] = None) -> bool:
        """On the I/O thread: publish and wait for the broker's confirm. False if it did not confirm."""
        if len(body) > self.config.max_message_bytes:
            self.log.warn("message over RTB_BROKER_MAX_MESSAGE_BYTES not sent", bytes=len(body))
            return False
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2, headers={"traceparent": traceparent} if traceparent else None)
        try:
            self._pub.basic_publish(exchange, key, body, properties=props)
            return True
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError, pika.exceptions.AMQPError) as err:
            self.log.warn("publish not confirmed", err=str(err) or type(err).__name__)
            return False

    def _report(self, updates: List[Dict[str, Any]]) -> bool:
        tp = updates[0].get("traceparent") if len(updates) == 1 else None
        return self._publish("", self.topology.inbox, status_message(self.source, updates), tp)

    def _beat(self) -> None:
        extra: Dict[str, Any] = {"counters": {"deadLettered": self.dead_lettered}}
        if self._kinds_announced:
            extra["kinds"] = list(self.handlers)
        if not self._publish("", self.topology.inbox, status_message(self.source, [], **extra)):
            self.log.debug("heartbeat not confirmed; the next one repeats it")
        self._next_beat = time.monotonic() + self.config.heartbeat_ms / 1000

    def _call_io(self, fn: Callable[[], Any], default: Any = False) -> Any:
        """From a unit's thread: run `fn` on the I/O thread and wait for what it returns."""
        fut: "Future[Any]" = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as err:  # noqa: B902 - handed to the waiting thread
                fut.set_exception(err)

        try:
            assert self._conn is not None
            self._conn.add_callback_threadsafe(run)
            return fut.result(timeout=120)
        except Exception as err:
            self.log.warn("broker call failed", err=str(err) or type(err).__name__)
            return default

    # ---- deliveries ------------------------------------------------------------------

    def _is_cancelled(self, key: Tuple[int, int]) -> bool:
        with self._lock:
            expires = self._cancelled.get(key)
            return expires is not None and expires > time.monotonic()

    def _on_control(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        try:
            attempts = parse_cancel(body)
        except InvalidMessage as err:
            self.log.warn("ignoring an invalid control message", reason=str(err))
            return
        with self._lock:
            for key in attempts:
                self._cancelled.pop(key, None)
                self._cancelled[key] = time.monotonic() + REMEMBER_S
                running = self._running.get(key)
                if running is not None:
                    running.abort("cancelled")
            while len(self._cancelled) > MAX_REMEMBERED:
                self._cancelled.popitem(last=False)

    def _dead_letter(self, tag: int, reason: str) -> None:
        self.log.warn("dead-lettering an invalid job message", reason=reason)
        self._ch.basic_nack(tag, requeue=False)
        self.dead_lettered += 1
        # Counted at once and reported soon, as the TypeScript heartbeat does.
        self._next_beat = min(self._next_beat, time.monotonic() + 0.2)

    def _on_job(self, kind: str, method: Any, props: Any, body: bytes) -> None:
        header = (props.headers or {}).get("traceparent")
        try:
            job_kind, units = parse_job(body, header if isinstance(header, str) else None)
        except InvalidMessage as err:
            return self._dead_letter(method.delivery_tag, str(err))
        if job_kind != kind:
            return self._dead_letter(method.delivery_tag, "kind: %s arrived on the queue of %s" % (job_kind, kind))
        job = _JobInHand(method.delivery_tag, kind, units, self._generation, _delivery_count(props))
        self._jobs[job.tag] = job
        for i, unit in enumerate(units):
            threading.Thread(target=self._run_unit, args=(job, i, unit), daemon=True, name="unit-%d" % unit.unit_id).start()

    def _run_unit(self, job: _JobInHand, i: int, unit: JobUnit) -> None:
        try:
            outcome = self._attempt(job, unit)
        except Exception as err:  # a bug of ours: hand the unit back rather than lose it
            self.log.error("unit failed unexpectedly; handing it back", unitId=unit.unit_id, err=repr(err))
            outcome = ("handed back", True)
        self._call_io(lambda: self._unit_done(job, i, outcome), None)

    def _report_for(self, job: _JobInHand, updates: List[Dict[str, Any]]) -> bool:
        # A job of a lost connection was handed back by the broker: its reports would only repeat.
        return job.generation == self._generation and self._report(updates)

    def _attempt(self, job: _JobInHand, unit: JobUnit) -> Tuple[str, bool]:
        kind = job.kind
        key = (unit.unit_id, unit.attempt)
        log = self.log.child(unitId=unit.unit_id, attempt=unit.attempt, kind=kind)
        if self._is_cancelled(key):
            log.info("attempt cancelled: job dropped before its handler ran")
            return ("dropped", True)
        slots = self._slots[kind]
        while not slots.acquire(timeout=0.05):
            if self._abort_all.is_set():
                return ("handed back", True)
        try:
            if self._abort_all.is_set():
                return ("handed back", True)
            if self._is_cancelled(key):
                log.info("attempt cancelled: job dropped before its handler ran")
                return ("dropped", True)
            attempt = Attempt()
            with self._lock:
                self._running[key] = attempt
            try:
                processing = unit_update(unit, "processing")
                processing_ok = self._call_io(lambda: self._report_for(job, [processing]))
                final = self._run_handler(kind, unit, attempt, log)
            finally:
                with self._lock:
                    self._running.pop(key, None)
        finally:
            # The slot is free once the handler ended, not once its report is confirmed.
            slots.release()
        if final is None:
            return ("cancelled", True) if attempt.reason == "cancelled" else ("handed back", True)
        final = self._fitted(final, log)
        terminal_ok = self._call_io(lambda: self._report_for(job, [final]))
        log.debug("job done", status=final["status"])
        return ("reported", bool(processing_ok and terminal_ok))

    def _run_handler(self, kind: str, unit: JobUnit, attempt: Attempt, log: Logger) -> Optional[Dict[str, Any]]:
        """The attempt's terminal update, or None when nothing is to be reported (cancelled, or handed back)."""
        if self._abort_all.is_set():
            attempt.abort("shutdown")
        box: Dict[str, Any] = {}
        job = Job(unit, kind, attempt.aborted, lambda: attempt.reason, log)
        handler = self.handlers[kind]

        def call() -> None:
            try:
                box["result"] = handler(job)
            except BaseException as err:  # noqa: B902 - reported as the attempt's error
                box["error"] = err
            attempt.wake.set()

        threading.Thread(target=call, daemon=True, name="handler-%d" % unit.unit_id).start()
        if not attempt.wake.wait(self.config.timeout_ms / 1000):
            attempt.abort("timeout")
        if attempt.reason == "cancelled":
            log.info("attempt cancelled: handler aborted, nothing reported")
            return None
        if attempt.reason in ("shutdown", "lost"):
            return None
        if attempt.reason == "timeout":
            return unit_update(unit, "error", error={"message": "handler exceeded %d ms (RTB_AGENT_TIMEOUT_MS)" % self.config.timeout_ms, "retryable": True})
        if "error" in box:
            if self._abort_all.is_set():
                # Cut short by our own shutdown: not the unit's fault. Hand it back for another agent.
                return None
            err = box["error"]
            message = str(err) or type(err).__name__
            return unit_update(unit, "error", error={"message": cut_message(message), "retryable": not isinstance(err, PermanentError)})
        return unit_update(unit, "success", result=box.get("result"))

    def _fitted(self, update: Dict[str, Any], log: Logger) -> Dict[str, Any]:
        """A success whose report cannot be encoded or would not fit one message ends as a permanent error: no retry could report it either."""
        if update["status"] != "success":
            return update
        try:
            size = len(status_message(self.source, [update]))
        except (TypeError, ValueError) as err:
            problem = "result cannot be encoded as JSON: %s" % err
        else:
            if size <= self.config.max_message_bytes:
                return update
            problem = "result too large to report: its status message is %d bytes, at most %d fit (RTB_BROKER_MAX_MESSAGE_BYTES)" % (size, self.config.max_message_bytes)
        log.warn("result cannot be reported: ending the attempt as a permanent error", error=problem)
        out = {k: v for k, v in update.items() if k != "result"}
        return dict(out, status="error", error={"message": cut_message(problem), "retryable": False})

    def _unit_done(self, job: _JobInHand, i: int, outcome: Tuple[str, bool]) -> None:
        """On the I/O thread, once per unit: when the job's last unit is done, settle the job."""
        if job.generation != self._generation:
            return  # its connection is gone, and with it the delivery: the broker handed it back
        job.outcomes[i] = outcome
        if len(job.outcomes) < len(job.units):
            return
        self._jobs.pop(job.tag, None)
        try:
            if not all(ok for _, ok in job.outcomes.values()):
                # After a pause, not at once, and longer each time the job came back: a
                # recovering broker would be spun, and before RabbitMQ 4.3 every requeue spends
                # one of a quorum queue's deliveries (x-delivery-limit).
                pause = retry_pause(job.deliveries)
                self.log.warn("status report failed: handing the job back after a pause", units=len(job.units), pauseSeconds=pause)
                self._conn.call_later(pause, lambda: self._settle_quietly(lambda: self._ch.basic_nack(job.tag, requeue=True)))
                return
            left = [u for n, u in enumerate(job.units) if job.outcomes[n][0] == "handed back"]
            if not left:
                return self._ch.basic_ack(job.tag)
            if len(left) == len(job.units):
                return self._ch.basic_nack(job.tag, requeue=True)
            # Cut short after some units were reported: hand back only the others, as a job of
            # their own, so the reported ones do not run again elsewhere.
            if self._publish(self.topology.jobs_exchange, job.kind, self._job_body(job.kind, left)):
                self._ch.basic_ack(job.tag)
            else:
                self._ch.basic_nack(job.tag, requeue=True)
        except pika.exceptions.AMQPError as err:
            # The channel is gone: the broker hands the job back by itself.
            self.log.warn("could not settle a job", err=str(err) or type(err).__name__)

    def _settle_quietly(self, settle: Callable[[], None]) -> None:
        try:
            settle()
        except pika.exceptions.AMQPError:
            pass  # the channel is gone: the broker hands the job back by itself

    @staticmethod
    def _job_body(kind: str, units: List[JobUnit]) -> bytes:
        def unit(u: JobUnit) -> Dict[str, Any]:
            d: Dict[str, Any] = {"unitId": u.unit_id, "attempt": u.attempt, "payload": u.payload}
            if u.deps:
                d["deps"] = u.deps
            if u.traceparent:
                d["traceparent"] = u.traceparent
            return d

        if len(units) == 1:
            return encode(dict({"v": 1, "type": "job", "kind": kind}, **unit(units[0])))
        return encode({"v": 1, "type": "job", "kind": kind, "units": [unit(u) for u in units]})

    # ---- the process -----------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            # A second signal: exit at once (the broker hands back whatever is in hand).
            os._exit(1)
        self._stopping = True

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; then let the jobs in hand finish within
        RTB_SHUTDOWN_TIMEOUT_MS, hand back the rest, and return 0. A lost connection is
        opened again (each host in turn, for up to RTB_CONNECT_TIMEOUT_MS)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        first = True
        while True:
            try:
                self._setup()
            except _Stopped:
                return 0
            except pika.exceptions.AMQPChannelError as err:
                # A refusal (406: a queue declared with other arguments ...): no retry can pass it.
                self.log.error("broker refused the agent's setup", err=str(err) or type(err).__name__)
                return 1
            except pika.exceptions.AMQPConnectionError as err:
                self._lost(err)
                continue
            if first:
                self.log.info("agent ready", kinds=list(self.handlers), concurrency=self.config.concurrency)
            else:
                self.log.info("reconnected to the broker", kinds=list(self.handlers))
            first = False
            try:
                return self._serve()
            except pika.exceptions.AMQPError as err:
                if self._stopping:
                    return 0
                self._lost(err)

    def _lost(self, err: Exception) -> None:
        """The connection is gone, and with it every delivery in hand (the broker requeues them):
        abort their handlers without reporting, forget the jobs, and connect again."""
        self.log.warn("lost the broker connection; connecting again", err=str(err) or type(err).__name__, jobs=len(self._jobs))
        self._generation += 1
        with self._lock:
            for running in self._running.values():
                running.abort("lost")
        self._jobs.clear()
        self._consumer_tags = []
        self._kinds_announced = False
        try:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        except pika.exceptions.AMQPError:
            pass

    def _serve(self) -> int:
        assert self._conn is not None
        abort_at = deadline = None
        while True:
            if not self._conn.is_open:
                # Found closed by a publish (which only said "not confirmed"): pika's loop is gone with it.
                raise pika.exceptions.StreamLostError("the broker connection closed")
            self._conn.process_data_events(time_limit=0.05)
            now = time.monotonic()
            if now >= self._next_beat:
                self._beat()
            if self._stopping and deadline is None:
                # Stop intake; jobs in hand finish until four fifths of the time, then their
                # handlers are aborted and their units handed back (the rest is for that).
                for tag in self._consumer_tags:
                    self._ch.basic_cancel(tag)
                budget = self.config.shutdown_timeout_ms / 1000
                abort_at, deadline = now + budget * 0.8, now + budget
                self.log.info("stopping: finishing the jobs in hand", jobs=len(self._jobs))
            if deadline is not None and abort_at is not None:
                if now >= abort_at and not self._abort_all.is_set():
                    self._abort_all.set()
                    with self._lock:
                        for running in self._running.values():
                            running.abort("shutdown")
                if not self._jobs or now >= deadline:
                    break
        if self._jobs:
            self.log.warn("shutdown timeout: jobs still in hand go back to their queues", jobs=len(self._jobs))
        try:
            self._conn.close()
        except pika.exceptions.AMQPError:
            pass
        self.log.info("agent stopped")
        return 0
