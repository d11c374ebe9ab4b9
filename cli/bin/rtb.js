#!/usr/bin/env node
// The `rtb` command. Its source is TypeScript, run through tsx's loader: nothing to build.
// Started through node_modules/.bin/rtb (a symlink), Node still resolves this file's real
// path, so both imports below resolve from cli/ whatever the working directory.
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
