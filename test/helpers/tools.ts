/**
 * Locates external command-line tools the tests depend on. Missing tools are an error, not a skip:
 * the tests that use them are part of the required suite.
 */
import { accessSync, constants } from "node:fs";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Path of the grpcurl binary: `$GRPCURL` if set, else `.tools/bin/grpcurl` in the repository, else
 * `/tmp/gobin/grpcurl`. Throws if none of them is an executable file.
 */
export function grpcurlPath(): string {
  const fromEnv = process.env.GRPCURL;
  if (fromEnv) {
    if (isExecutable(fromEnv)) return fromEnv;
    throw new Error(`GRPCURL is set to "${fromEnv}", which is not an executable file.`);
  }
  const candidates = [`${repoRoot}.tools/bin/grpcurl`, "/tmp/gobin/grpcurl"];
  const found = candidates.find(isExecutable);
  if (found) return found;
  throw new Error(
    `grpcurl not found (looked in ${candidates.join(", ")}). Run scripts/setup.sh, which builds it into ` +
      ".tools/bin, or set GRPCURL to the path of a grpcurl binary.",
  );
}

/** Path of the `buf` CLI installed from the @bufbuild/buf devDependency. */
export function bufPath(): string {
  const path = `${repoRoot}node_modules/.bin/buf`;
  if (isExecutable(path)) return path;
  throw new Error(`buf not found at ${path}; the @bufbuild/buf devDependency is not installed (run npm ci).`);
}

/**
 * Path of the cosign binary: `$COSIGN` if set, else `.tools/bin/cosign` in the repository, else
 * `/tmp/gobin/cosign`. Throws if none of them is an executable file.
 */
export function cosignPath(): string {
  const fromEnv = process.env.COSIGN;
  if (fromEnv) {
    if (isExecutable(fromEnv)) return fromEnv;
    throw new Error(`COSIGN is set to "${fromEnv}", which is not an executable file.`);
  }
  const candidates = [`${repoRoot}.tools/bin/cosign`, "/tmp/gobin/cosign"];
  const found = candidates.find(isExecutable);
  if (found) return found;
  throw new Error(
    `cosign not found (looked in ${candidates.join(", ")}). Run scripts/setup.sh, which builds it into ` +
      ".tools/bin, or set COSIGN to the path of a cosign binary.",
  );
}
