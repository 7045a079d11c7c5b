/**
 * Semantic versions (semver 2.0.0): parsing, precedence and "is this newer". Accepts an optional
 * leading "v" as release tags usually carry (v1.4.0). Pure: no I/O.
 */

/** A parsed semantic version. Build metadata is kept but never affects precedence. */
export interface Version {
  major: number;
  minor: number;
  patch: number;
  /** Prerelease identifiers, e.g. ["rc", "1"] for 1.0.0-rc.1; empty for a normal version. */
  prerelease: readonly string[];
  /** Build metadata identifiers, e.g. ["sha", "5114f85"] for 1.0.0+sha.5114f85. */
  build: readonly string[];
}

const NUMERIC = "0|[1-9]\\d*";
const PRERELEASE_ID = `(?:${NUMERIC}|\\d*[a-zA-Z-][0-9a-zA-Z-]*)`;
const BUILD_ID = "[0-9a-zA-Z-]+";
const SEMVER = new RegExp(
  `^v?(${NUMERIC})\\.(${NUMERIC})\\.(${NUMERIC})` +
    `(?:-(${PRERELEASE_ID}(?:\\.${PRERELEASE_ID})*))?` +
    `(?:\\+(${BUILD_ID}(?:\\.${BUILD_ID})*))?$`,
);
const DIGITS = /^\d+$/;

/**
 * Parses `s` as a semantic version, with or without a leading "v".
 * Returns undefined when `s` is not semver or a numeric part exceeds Number.MAX_SAFE_INTEGER.
 */
export function parseVersion(s: string): Version | undefined {
  const m = SEMVER.exec(s);
  if (m === null) return undefined;
  const [major, minor, patch] = [m[1], m[2], m[3]].map(Number);
  if (major === undefined || minor === undefined || patch === undefined) return undefined;
  if (![major, minor, patch].every(Number.isSafeInteger)) return undefined;
  return {
    major,
    minor,
    patch,
    prerelease: m[4] === undefined ? [] : m[4].split("."),
    build: m[5] === undefined ? [] : m[5].split("."),
  };
}

/** Semver precedence of `a` against `b`: -1 when a < b, 0 when equal (build metadata ignored), 1 when a > b. */
export function compareVersions(a: Version, b: Version): -1 | 0 | 1 {
  return (
    compareNumbers(a.major, b.major) ||
    compareNumbers(a.minor, b.minor) ||
    compareNumbers(a.patch, b.patch) ||
    comparePrerelease(a.prerelease, b.prerelease)
  );
}

/**
 * Whether `candidate` has higher precedence than `running`. Undefined when either is not semver,
 * so that callers decide what an unversioned build means instead of guessing.
 */
export function isNewer(candidate: string, running: string): boolean | undefined {
  const c = parseVersion(candidate);
  const r = parseVersion(running);
  if (c === undefined || r === undefined) return undefined;
  return compareVersions(c, r) > 0;
}

function compareNumbers(a: number, b: number): -1 | 0 | 1 {
  return a < b ? -1 : a > b ? 1 : 0;
}

function comparePrerelease(a: readonly string[], b: readonly string[]): -1 | 0 | 1 {
  if (a.length === 0 || b.length === 0) return compareNumbers(b.length, a.length);
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const order = compareIdentifiers(a[i] ?? "", b[i] ?? "");
    if (order !== 0) return order;
  }
  return compareNumbers(a.length, b.length);
}

function compareIdentifiers(a: string, b: string): -1 | 0 | 1 {
  const aNumeric = DIGITS.test(a);
  const bNumeric = DIGITS.test(b);
  if (aNumeric && bNumeric) {
    // Numeric identifiers have no leading zeros, so length then digits orders them at any size.
    return compareNumbers(a.length, b.length) || compareStrings(a, b);
  }
  if (aNumeric !== bNumeric) return aNumeric ? -1 : 1;
  return compareStrings(a, b);
}

function compareStrings(a: string, b: string): -1 | 0 | 1 {
  return a < b ? -1 : a > b ? 1 : 0;
}
