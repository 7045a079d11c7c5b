/**
 * The Compose project's `.env`, kept consistent with what the updater installed.
 *
 * A deployment made with Compose names the app's image through a variable of the project's `.env`
 * (`image: ${PROCESSGIT_IMAGE}`). After an update the running container uses the new image, but
 * the compose file still resolves to the old one: the next `docker compose up -d` would see the
 * container as drifted and re-create it from the OLD image, silently undoing the update. So when an
 * update passes its health verdict the updater records the new image (the digest reference it
 * pulled) in that variable, and a rollback puts the previous value back.
 *
 * Only the one assignment line changes; comments, order and every other line (the token among
 * them) are kept byte for byte. The file is rewritten in place (see `rewrite`), so the updater
 * needs write permission on the file only, and its owner and mode stay the operator's. Mount the
 * project directory rather than the file alone: tools such as `sed -i` replace the file with a new
 * one, which a single-file bind mount would not follow.
 */
import { access, constants, open, readFile } from "node:fs/promises";
import { errorMessage, UpdaterError } from "../errors.js";

/** An assignment line `NAME=value` (spaces around `=` allowed, an `export ` prefix tolerated). */
function assignment(variable: string): RegExp {
  return new RegExp(`^(\\s*(?:export\\s+)?${variable}\\s*=)(.*)$`);
}

/** What `variable` is set to in `.env` text, as written (`raw`) and as Compose reads it (`value`). */
export function envAssignment(text: string, variable: string): { raw: string; value: string } | undefined {
  const re = assignment(variable);
  let found: { raw: string; value: string } | undefined;
  for (const line of text.split(/\r?\n/)) {
    const m = re.exec(line);
    // Compose uses the last assignment when a variable is set twice.
    if (m) found = { raw: m[2] ?? "", value: unquote((m[2] ?? "").trim()) };
  }
  return found;
}

/**
 * `text` with `variable` set to `value`: every assignment line of it is replaced (so no later
 * duplicate can override the new value), or one is appended when there is none; nothing else changes.
 */
export function withEnvValue(text: string, variable: string, value: string): string {
  const re = assignment(variable);
  let found = false;
  const lines = text.split("\n").map((line) => {
    const cr = line.endsWith("\r") ? "\r" : "";
    const m = re.exec(cr ? line.slice(0, -1) : line);
    if (!m) return line;
    found = true;
    return `${m[1]}${value}${cr}`;
  });
  if (found) return lines.join("\n");
  const sep = text === "" || text.endsWith("\n") ? "" : "\n";
  return `${text}${sep}${variable}=${value}\n`;
}

function unquote(v: string): string {
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0])) return v.slice(1, -1);
  return v.replace(/\s+#.*$/, "");
}

export class ComposeEnvFile {
  constructor(
    readonly path: string,
    readonly variable: string,
  ) {}

  /** Reads the current assignment, and checks that the file can be rewritten. Changes nothing. */
  async check(): Promise<{ raw: string; value: string } | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      throw this.problem(`cannot read it: ${errorMessage(err)}`);
    }
    try {
      await access(this.path, constants.W_OK);
    } catch {
      throw this.problem(
        `it is not writable by this process (uid ${process.getuid?.() ?? "?"}, gid ${process.getgid?.() ?? "?"}); on the host, let the updater's group write it: chgrp 10001 .env && chmod g+w .env (it is rewritten in place, so its owner and mode stay as they are)`,
      );
    }
    return envAssignment(text, this.variable);
  }

  /** Sets the variable to `value`, written as is (an image reference needs no quoting). */
  async set(value: string): Promise<void> {
    await this.rewrite((text) => withEnvValue(text, this.variable, value));
  }

  /** Puts back what `check` read: the previous value as it was written, or no assignment at all. */
  async restore(previous: string | undefined): Promise<void> {
    if (previous !== undefined) return this.set(previous);
    const re = assignment(this.variable);
    await this.rewrite((text) =>
      text
        .split("\n")
        .filter((line) => !re.test(line.replace(/\r$/, "")))
        .join("\n"),
    );
  }

  /**
   * Rewrites the file in place: same inode, owner and mode, so it needs only write permission on
   * the file (not on its directory), and an editor's or Compose's view of it never goes stale.
   * One write of the whole new contents, padded with newlines to at least the old length, then a
   * truncation to the exact length: a crash between the two leaves blank lines at the end, which
   * Compose ignores, never a fragment of an old line.
   */
  private async rewrite(edit: (text: string) => string): Promise<void> {
    const handle = await open(this.path, "r+");
    try {
      const before = await handle.readFile();
      const next = Buffer.from(edit(before.toString("utf8")), "utf8");
      const padded =
        next.length >= before.length
          ? next
          : Buffer.concat([next, Buffer.alloc(before.length - next.length, 0x0a)]);
      await handle.write(padded, 0, padded.length, 0);
      await handle.sync();
      if (next.length < before.length) {
        await handle.truncate(next.length);
        await handle.sync();
      }
    } finally {
      await handle.close();
    }
  }

  private problem(what: string): UpdaterError {
    return new UpdaterError(
      "failed_precondition",
      `the Compose env file ${this.path} (PROCESSGIT_UPDATER_COMPOSE_ENV_FILE) must be kept in step with the update, but ${what}`,
      { reason: "PREFLIGHT_FAILED" },
    );
  }
}
