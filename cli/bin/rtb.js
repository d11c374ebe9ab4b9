#!/usr/bin/env node
// The `rtb` command. Its source is TypeScript, run through tsx's loader: nothing to build.
// Started through node_modules/.bin/rtb (a symlink), Node still resolves this file's real
// path, so both imports below resolve from cli/ whatever the working directory. The
// repository's tsconfig is named, not looked up from the working directory: its `paths` make
// @rtb/protocol and @rtb/runtime resolve to their sources (their exports are the built dist/).
import { fileURLToPath } from "node:url";
import { register } from "tsx/esm/api";

register({ tsconfig: fileURLToPath(new URL("../../tsconfig.json", import.meta.url)) });
await import("../src/main.ts");
