#!/usr/bin/env node
/** The `processgit-updater` executable: runs the CLI with the process's arguments and environment. */
import { run } from "./main.js";

run(process.argv.slice(2), process.env, process.stdout).then((code) => {
  process.exitCode = code;
});
