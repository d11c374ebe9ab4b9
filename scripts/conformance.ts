/**
 * `npm run conformance -- --agent "<command line>"`: run an agent implementation, in any
 * language, against the real system and check that it speaks rtb's protocol (what is checked:
 * scripts/conformance-cases.ts; the README's "Agents in any language"). It starts an api and a
 * leader of this checkout on a database and broker names of the run's own (dropped at the end),
 * on the PostgreSQL and RabbitMQ that RTB_DB_* and RTB_BROKER_* name, and starts the agent with
 * the RTB_* settings an agent reads. One line per case; exit 0 if every case passed, 1 if any
 * failed, 2 on a bad flag.
 *
 *   npm run conformance -- --agent "node --import tsx services/agent/src/main.ts"
 *   npm run conformance -- --agent "PYTHONPATH=python /usr/bin/python3 examples/python-agent/agent.py"
 */
import { parseArgs } from "node:util";
import { CASES, runConformance } from "./conformance-cases.ts";
import { parseCommandLine } from "./conformance-system.ts";

let agent: string;
try {
  const { values } = parseArgs({ options: { agent: { type: "string" }, help: { type: "boolean", default: false } } });
  if (values.help) {
    console.log('usage: npm run conformance -- --agent "<command line of the agent to check>"');
    process.exit(0);
  }
  if (!values.agent) throw new Error('--agent: expected the command line that starts the agent (for example --agent "python3 agent.py")');
  parseCommandLine(values.agent);
  agent = values.agent;
} catch (err) {
  console.error(`conformance: ${(err as Error).message}`);
  process.exit(2);
}

const started = Date.now();
console.log(`conformance: ${CASES.length} cases against ${agent}`);
const results = await runConformance({ agent, say: (line) => console.log(line) });
const failed = results.filter((r) => !r.ok);
console.log(`conformance: ${results.length - failed.length} passed, ${failed.length} failed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(failed.length > 0 ? 1 : 0);
