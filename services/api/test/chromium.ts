import { spawn } from "node:child_process";
import { accessSync, constants, createReadStream, existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createBrotliDecompress } from "node:zlib";

/** The Chromium the dashboard test drives, and where it came from (logged by the test). */
export interface ChromiumChoice {
  source: "RTB_TEST_CHROMIUM" | "system" | "@sparticuz/chromium";
  executablePath: string;
  args: string[];
  env?: Record<string, string>;
}

// Flags for a browser we did not configure: running as root in a container needs no sandbox.
const SYSTEM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"];
const SYSTEM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

/**
 * RTB_TEST_CHROMIUM (a path) if set and not empty; else a system Chromium (/usr/bin/chromium,
 * then the names above on PATH); else the headless Chromium that `npm ci` installed with
 * @sparticuz/chromium, so the test needs nothing installed by hand.
 */
export async function findChromium(env: NodeJS.ProcessEnv = process.env): Promise<ChromiumChoice> {
  if (env.RTB_TEST_CHROMIUM) return { source: "RTB_TEST_CHROMIUM", executablePath: env.RTB_TEST_CHROMIUM, args: SYSTEM_ARGS };
  const system = findSystemChromium(env.PATH ?? "");
  if (system) return { source: "system", executablePath: system, args: SYSTEM_ARGS };
  return npmChromium(env);
}

function findSystemChromium(path: string): string | undefined {
  const dirs = ["/usr/bin", ...path.split(delimiter).filter(Boolean)];
  for (const name of SYSTEM_NAMES) {
    for (const dir of dirs) {
      const file = join(dir, name);
      if (isExecutable(file)) return file;
    }
  }
  return undefined;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The package's brotli-compressed headless shell, which `executablePath()` extracts once to
 * `<tmpdir>/chromium` and reuses after that (a run killed mid-extraction leaves a truncated
 * file there: delete it). The package also ships the NSS libraries the binary links against
 * (al2023.tar.br, meant for AWS Lambda); extracting them too and putting them first on the
 * browser's LD_LIBRARY_PATH means a machine without libnss3 runs it as well.
 */
async function npmChromium(env: NodeJS.ProcessEnv): Promise<ChromiumChoice> {
  const { default: chromium } = await import("@sparticuz/chromium");
  const executablePath = await chromium.executablePath();
  const bin = join(dirname(createRequire(import.meta.url).resolve("@sparticuz/chromium")), "..", "..", "bin");
  const libs = join(tmpdir(), "al2023", "lib");
  if (!existsSync(libs)) await untarBrotli(join(bin, "al2023.tar.br"), join(tmpdir(), "al2023"));
  const ldPath = [libs, ...(env.LD_LIBRARY_PATH ?? "").split(delimiter).filter(Boolean)].join(delimiter);
  return { source: "@sparticuz/chromium", executablePath, args: chromium.args, env: { ...stringEnv(env), LD_LIBRARY_PATH: ldPath } };
}

function stringEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

/** Extract a .tar.br into `dir` (Node has no tar of its own; every Linux has `tar`). */
async function untarBrotli(file: string, dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const tar = spawn("tar", ["-x", "-C", dir], { stdio: ["pipe", "inherit", "inherit"] });
  const exited = new Promise<void>((resolve, reject) => {
    tar.once("error", reject);
    tar.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`tar -x ${file} exited with ${code}`))));
  });
  await Promise.all([pipeline(createReadStream(file), createBrotliDecompress(), tar.stdin), exited]);
}
