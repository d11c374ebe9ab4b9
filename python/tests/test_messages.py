"""The message rules rtb_agent mirrors from packages/protocol (run by test/system/conformance.test.ts)."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rtb_agent.agent import RETRY_PAUSE_MAX, Agent, _delivery_count, retry_pause  # noqa: E402
from rtb_agent.config import ConfigError, load_config  # noqa: E402
from rtb_agent.log import Logger  # noqa: E402
from rtb_agent.messages import InvalidMessage, cut_message, parse_cancel, parse_job, status_message, unit_update  # noqa: E402


def body(msg):
    return json.dumps(msg).encode()


class CutMessage(unittest.TestCase):
    def test_at_the_limit_whole_one_past_cut(self):
        self.assertEqual(cut_message("a" * 4000), "a" * 4000)
        self.assertEqual(cut_message("a" * 4001), "a" * 4000)

    def test_counts_utf16_code_units_as_zod_does_and_never_splits_a_character(self):
        # Each emoji is 2 UTF-16 code units (JavaScript's length): 3999 + 2 would be 4001.
        self.assertEqual(cut_message("a" * 3999 + "\U0001F680"), "a" * 3999)
        self.assertEqual(cut_message("a" * 3998 + "\U0001F680"), "a" * 3998 + "\U0001F680")


class ParseJob(unittest.TestCase):
    def test_single_form_with_traceparent(self):
        tp = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        kind, units = parse_job(body({"v": 1, "type": "job", "unitId": 7, "attempt": 2, "kind": "k", "payload": {"x": 1}, "traceparent": tp}))
        self.assertEqual(kind, "k")
        self.assertEqual([(u.unit_id, u.attempt, u.payload, u.deps, u.traceparent) for u in units], [(7, 2, {"x": 1}, {}, tp)])

    def test_reports_carry_the_traceparent_of_their_unit_only(self):
        tp = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
        _, units = parse_job(body({"v": 1, "type": "job", "kind": "k", "units": [{"unitId": 1, "attempt": 1, "traceparent": tp}, {"unitId": 2, "attempt": 1}]}))
        first, second = unit_update(units[0], "processing"), unit_update(units[1], "success", result=None)
        self.assertEqual((first["unitId"], first["status"], first["traceparent"]), (1, "processing", tp))
        self.assertNotIn("traceparent", second)
        # The header traceparent stands for the unit of a single-unit job; a malformed header is ignored.
        _, single = parse_job(body({"v": 1, "type": "job", "kind": "k", "unitId": 3, "attempt": 2}), tp)
        self.assertEqual(unit_update(single[0], "error", error={"message": "x", "retryable": True})["traceparent"], tp)
        _, unheaded = parse_job(body({"v": 1, "type": "job", "kind": "k", "unitId": 3, "attempt": 2}), "01-" + tp[3:])
        self.assertNotIn("traceparent", unit_update(unheaded[0], "processing"))

    def test_a_malformed_traceparent_is_ignored_as_its_schema_ignores_it(self):
        zeros = "00-" + "0" * 32 + "-" + "b" * 16 + "-01"
        for bad in ("bogus", "01-" + "a" * 32 + "-" + "b" * 16 + "-01", None, 7, zeros):
            _, units = parse_job(body({"v": 1, "type": "job", "kind": "k", "units": [{"unitId": 1, "attempt": 1, "traceparent": bad}]}))
            self.assertIsNone(units[0].traceparent, bad)
            self.assertNotIn("traceparent", unit_update(units[0], "processing"))

    def test_batch_form_unit_by_unit(self):
        kind, units = parse_job(body({"v": 1, "type": "job", "kind": "k", "units": [{"unitId": 1, "attempt": 1, "payload": None}, {"unitId": 2, "attempt": 3, "payload": "p", "deps": {"a": 1}}]}))
        self.assertEqual([(u.unit_id, u.attempt, u.deps) for u in units], [(1, 1, {}), (2, 3, {"a": 1})])

    def test_batch_of_1000_taken_1001_refused(self):
        units = [{"unitId": i + 1, "attempt": 1, "payload": {}} for i in range(1001)]
        self.assertEqual(len(parse_job(body({"v": 1, "type": "job", "kind": "k", "units": units[:1000]}))[1]), 1000)
        with self.assertRaises(InvalidMessage):
            parse_job(body({"v": 1, "type": "job", "kind": "k", "units": units}))

    def test_invalid_messages_name_the_field(self):
        cases = [
            (b"not json", "body is not valid JSON"),
            (body({"v": 2, "type": "job", "kind": "k", "unitId": 1, "attempt": 1}), "v:"),
            (body({"v": 1, "type": "job", "kind": "k k", "unitId": 1, "attempt": 1}), "kind:"),
            (body({"v": 1, "type": "job", "kind": "k", "unitId": 0, "attempt": 1}), "unitId:"),
            (body({"v": 1, "type": "job", "kind": "k", "unitId": True, "attempt": 1}), "unitId:"),
            (body({"v": 1, "type": "job", "kind": "k", "units": [{"unitId": 1, "attempt": "1"}]}), "units.0.attempt:"),
        ]
        for raw, reason in cases:
            with self.assertRaises(InvalidMessage) as caught:
                parse_job(raw)
            self.assertIn(reason, str(caught.exception))

    def test_cancel_and_unknown_control_types(self):
        self.assertEqual(parse_cancel(body({"v": 1, "type": "cancel", "units": [{"unitId": 3, "attempt": 1}]})), [(3, 1)])
        self.assertEqual(parse_cancel(body({"v": 1, "type": "something-new"})), [])


class Config(unittest.TestCase):
    def test_defaults_as_the_typescript_agent(self):
        c = load_config({})
        self.assertEqual((c.broker_hosts, c.queue_type, c.concurrency, c.timeout_ms, c.shutdown_timeout_ms, c.heartbeat_ms), ([("localhost", 5672)], "quorum", 4, 30_000, 10_000, 5_000))

    def test_a_bad_value_names_the_variable_and_hides_a_password(self):
        with self.assertRaises(ConfigError) as caught:
            load_config({"RTB_HEARTBEAT_MS": "50", "RTB_BROKER_QUEUE_TYPE": "fast", "RTB_BROKER_PASSWORD": "", "RTB_AGENT_TIMEOUT_MS": "500", "RTB_PROCESSING_TIMEOUT_MS": "400"})
        text = str(caught.exception)
        self.assertIn('RTB_HEARTBEAT_MS="50": expected an integer >= 100', text)
        self.assertIn('RTB_BROKER_QUEUE_TYPE="fast": expected one of classic, quorum', text)
        self.assertIn("RTB_AGENT_TIMEOUT_MS", text)

    def test_at_most_500_kinds_as_a_heartbeat_carries_them(self):
        kinds = ["k%d" % i for i in range(501)]
        self.assertEqual(len(load_config({"RTB_AGENT_KINDS": ",".join(kinds[:500])}).kinds), 500)
        with self.assertRaises(ConfigError) as caught:
            load_config({"RTB_AGENT_KINDS": ",".join(kinds)})
        self.assertIn("expected at most 500 kinds, got 501", str(caught.exception))


class FittedResult(unittest.TestCase):
    """A success whose status message would pass RTB_BROKER_MAX_MESSAGE_BYTES ends as a permanent error."""

    def setUp(self):
        self.agent = Agent({"k": lambda job: None}, load_config({"RTB_BROKER_MAX_MESSAGE_BYTES": "65536", "RTB_AGENT_ID": "a"}))
        _, units = parse_job(body({"v": 1, "type": "job", "kind": "k", "unitId": 1, "attempt": 1}))
        self.unit = units[0]

    def fitted(self, result):
        return self.agent._fitted(unit_update(self.unit, "success", result=result), Logger("silent"))

    def test_a_message_of_exactly_the_limit_is_sent_one_byte_more_is_not(self):
        empty = len(status_message(self.agent.source, [unit_update(self.unit, "success", result="")]))
        at = "x" * (65536 - empty)
        self.assertEqual(len(status_message(self.agent.source, [unit_update(self.unit, "success", result=at)])), 65536)
        self.assertEqual(self.fitted(at)["status"], "success")
        over = self.fitted(at + "x")
        self.assertEqual((over["status"], over["error"]["retryable"]), ("error", False))
        self.assertIn("result too large to report", over["error"]["message"])
        self.assertNotIn("result", over)

    def test_a_result_that_is_not_json_is_a_permanent_error(self):
        out = self.fitted({"x": float("nan")})
        self.assertEqual((out["status"], out["error"]["retryable"]), ("error", False))
        self.assertIn("result cannot be encoded as JSON", out["error"]["message"])

    def test_handler_kinds_follow_the_kind_rule(self):
        with self.assertRaises(ValueError):
            Agent({"no spaces": lambda job: None}, load_config({}))


class RetryPause(unittest.TestCase):
    def test_doubles_with_each_earlier_delivery_up_to_the_cap(self):
        self.assertEqual([retry_pause(n) for n in range(7)], [1.0, 2.0, 4.0, 8.0, 16.0, RETRY_PAUSE_MAX, RETRY_PAUSE_MAX])
        self.assertEqual(retry_pause(10**6), RETRY_PAUSE_MAX)
        # The 20 deliveries of a quorum queue's default limit last minutes, not 20 s.
        self.assertGreater(sum(retry_pause(n) for n in range(20)), 8 * 60)

    def test_counts_earlier_deliveries_from_either_header(self):
        class Props:
            def __init__(self, headers):
                self.headers = headers

        self.assertEqual(_delivery_count(Props(None)), 0)
        self.assertEqual(_delivery_count(Props({"x-delivery-count": 3})), 3)
        # RabbitMQ 4.3: requeues counted in x-acquired-count only.
        self.assertEqual(_delivery_count(Props({"x-delivery-count": 0, "x-acquired-count": 5})), 5)
        self.assertEqual(_delivery_count(Props({"x-delivery-count": True, "x-acquired-count": "2"})), 0)
        self.assertEqual(retry_pause(_delivery_count(Props({"x-delivery-count": 2}))), 4.0)


if __name__ == "__main__":
    unittest.main()
