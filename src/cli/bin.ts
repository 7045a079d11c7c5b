#!/usr/bin/env node
/** The `processgit-updater` executable: runs the CLI with the process's arguments and environment. */
import { run } from "./main.js";

// A reader that went away (`processgit-updater history | head -2`) ends the CLI quietly, as it
// ends `git log`: nothing more is written, exit 0, no stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
    process.exit(0);
  });
}

run(process.argv.slice(2), process.env, process.stdout).then((code) => {
  process.exitCode = code;
});
