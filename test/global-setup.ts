/**
 * Builds dist/ once before the tests that run the built program (`npm start`, the demo, the README
 * tour), exactly as an operator would build it.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";

export default function setup(): void {
  execFileSync("npm", ["run", "--silent", "build"], {
    cwd: join(import.meta.dirname, ".."),
    stdio: "inherit",
  });
}
