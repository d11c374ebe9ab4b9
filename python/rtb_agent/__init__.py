"""rtb_agent: write rtb agents in Python (pika). See examples/python-agent/README.md.

    from rtb_agent import run_agent, PermanentError

    def render(job):
        if "scene" not in job.payload:
            raise PermanentError("payload.scene: required")
        return {"frames": 24}

    run_agent({"render": render})
"""

import sys
from typing import Dict, Optional

from .agent import Agent
from .job import Handler, Job, PermanentError
from .config import Config, ConfigError, load_config
from .conformance import KIND as CONFORMANCE_KIND, conformance_handler

__all__ = ["Agent", "Config", "ConfigError", "CONFORMANCE_KIND", "Handler", "Job", "PermanentError", "conformance_handler", "load_config", "run_agent"]


def run_agent(handlers: Dict[str, Handler], env: Optional[Dict[str, str]] = None) -> None:
    """The whole program of an agent: read the RTB_* settings (a bad one: its message on
    stderr, exit 2), serve `handlers` (narrowed by RTB_AGENT_KINDS), and on SIGTERM or SIGINT
    let the jobs in hand finish within RTB_SHUTDOWN_TIMEOUT_MS, then exit 0."""
    try:
        config = load_config(env)
        agent = Agent(handlers, config)
    except ConfigError as err:
        sys.stderr.write("agent: %s\n" % err)
        sys.exit(2)
    sys.exit(agent.run())
