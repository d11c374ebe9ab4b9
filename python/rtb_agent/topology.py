"""The broker topology, as packages/runtime/src/topology.ts declares it: the same names (under
RTB_BROKER_PREFIX) and exactly the same arguments, since RabbitMQ refuses (406) a declare of an
existing queue with other ones. Every declare is idempotent; all run again after a reconnect."""

from typing import Any, Dict, Optional

from .config import Config


class Topology:
    def __init__(self, config: Config):
        p = config.broker_prefix
        self.queue_type = config.queue_type
        self.delivery_limit = config.delivery_limit
        self.box = p + config.broker_box
        self.inbox = p + "inbox"
        self.jobs_exchange = p + "rtb.jobs"
        self.control_exchange = p + "rtb.control"
        self.dead_exchange = p + "rtb.dead"
        self.dead = p + "dead"
        self._prefix = p

    def job_queue(self, kind: str) -> str:
        return self._prefix + "jobs." + kind

    def work_queue_args(self, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        args: Dict[str, Any] = {"x-queue-type": self.queue_type, "x-dead-letter-exchange": self.dead_exchange}
        if self.queue_type == "quorum":
            args["x-delivery-limit"] = self.delivery_limit
        args.update(extra or {})
        return args

    def declare(self, ch: Any) -> None:
        """Exchanges, outbox, inbox and the dead-letter queue: what every service relies on."""
        ch.exchange_declare(self.dead_exchange, "fanout", durable=True)
        ch.queue_declare(self.dead, durable=True, arguments={"x-queue-type": self.queue_type})
        ch.queue_bind(self.dead, self.dead_exchange, "")
        ch.exchange_declare(self.jobs_exchange, "direct", durable=True)
        ch.exchange_declare(self.control_exchange, "fanout", durable=True)
        ch.queue_declare(self.box, durable=True, arguments=self.work_queue_args({"x-single-active-consumer": True}))
        ch.queue_declare(self.inbox, durable=True, arguments=self.work_queue_args())

    def declare_job_queue(self, ch: Any, kind: str) -> str:
        """Only agents declare job queues: until one did, the leader's jobs of the kind come back, and its units wait for an agent."""
        queue = self.job_queue(kind)
        ch.queue_declare(queue, durable=True, arguments=self.work_queue_args())
        ch.queue_bind(queue, self.jobs_exchange, kind)
        return queue

    def declare_control_queue(self, ch: Any) -> str:
        """This agent's own queue on rtb.control: server-named, exclusive, auto-deleted, classic (an exclusive queue cannot be quorum)."""
        queue = ch.queue_declare("", exclusive=True, auto_delete=True, durable=False, arguments={"x-queue-type": "classic"}).method.queue
        ch.queue_bind(queue, self.control_exchange, "")
        return queue
