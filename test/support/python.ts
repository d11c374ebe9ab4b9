import { execFileSync } from "node:child_process";

/**
 * A Python that can `import pika`, for the tests of the Python agent (python/rtb_agent):
 * RTB_TEST_PYTHON, else Debian's /usr/bin/python3 (where apt-get puts python3-pika), else
 * python3 on PATH. The first on PATH is often a pyenv or venv one without it.
 */
export function pythonWithPika(): string {
  const candidates = [process.env.RTB_TEST_PYTHON, "/usr/bin/python3", "python3"].filter((c): c is string => !!c);
  for (const python of candidates) {
    try {
      execFileSync(python, ["-c", "import pika"], { stdio: "ignore" });
      return python;
    } catch {
      // not there, or no pika: the next one
    }
  }
  throw new Error(`no Python with pika among ${candidates.join(", ")}: apt-get install python3-pika (or name one in RTB_TEST_PYTHON)`);
}
