import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

/**
 * The layout docs/architecture.md describes ("Layout"), checked: dependencies point one way
 * (packages below db below the services below the CLI and the tests), every @rtb import is a
 * declared dependency (so a package installs and runs on its own), and no module imports one
 * that imports it back.
 */
const root = resolve(import.meta.dirname, "..");
const LAYERS: Record<string, { dir: string; layer: number }> = {
  "@rtb/protocol": { dir: "packages/protocol", layer: 0 },
  "@rtb/runtime": { dir: "packages/runtime", layer: 1 },
  "@rtb/db": { dir: "db", layer: 2 },
  "@rtb/leader": { dir: "services/leader", layer: 3 },
  "@rtb/agent": { dir: "services/agent", layer: 3 },
  "@rtb/api": { dir: "services/api", layer: 3 },
  "@rtb/cli": { dir: "cli", layer: 4 },
  "@rtb/testing": { dir: "test", layer: 5 },
};

const sourceFiles = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true, recursive: true })
    // dist/: what `npm pack` builds from src (docs/architecture.md, Packages), not sources.
    .filter((e) => e.isFile() && /\.(ts|js)$/.test(e.name) && !/(^|\/)(node_modules|dist)(\/|$)/.test(relative(dir, e.parentPath)))
    .map((e) => join(e.parentPath, e.name));
const importsOf = (file: string): string[] =>
  [...readFileSync(file, "utf8").matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"|import\(\s*"([^"]+)"\s*\)/g)].map((m) => (m[1] ?? m[2])!);

describe("layout", () => {
  it("every workspace is placed in a layer", () => {
    const workspaces: string[] = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).workspaces;
    expect(workspaces.sort()).toEqual(Object.values(LAYERS).map((l) => l.dir).sort());
  });

  it("runtime dependencies point down, and every @rtb import in src is one", () => {
    const wrong: string[] = [];
    for (const [name, { dir, layer }] of Object.entries(LAYERS)) {
      const manifest = JSON.parse(readFileSync(join(root, dir, "package.json"), "utf8"));
      const deps = Object.keys(manifest.dependencies ?? {}).filter((d) => d.startsWith("@rtb/"));
      for (const dep of deps) if (LAYERS[dep]!.layer >= layer) wrong.push(`${name} depends on ${dep}, which is not below it`);
      const src = join(root, dir, dir === "test" ? "support" : "src");
      for (const file of sourceFiles(src).filter((f) => !f.endsWith(".test.ts"))) {
        for (const spec of importsOf(file).filter((s) => s.startsWith("@rtb/"))) {
          if (!deps.includes(spec)) wrong.push(`${relative(root, file)} imports ${spec}, not in ${dir}/package.json dependencies`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  it("no module imports one that imports it back", () => {
    const graph = new Map<string, string[]>();
    for (const { dir } of Object.values(LAYERS)) {
      for (const file of sourceFiles(join(root, dir))) {
        graph.set(file, importsOf(file).filter((s) => s.startsWith(".")).map((s) => resolve(dirname(file), s)));
      }
    }
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const visit = (file: string, path: string[]) => {
      if (state.get(file) === "done") return;
      if (state.get(file) === "open") {
        cycles.push([...path.slice(path.indexOf(file)), file].map((f) => relative(root, f)).join(" > "));
        return;
      }
      state.set(file, "open");
      for (const next of graph.get(file) ?? []) visit(next, [...path, file]);
      state.set(file, "done");
    };
    for (const file of graph.keys()) visit(file, []);
    expect(cycles).toEqual([]);
  });
});
