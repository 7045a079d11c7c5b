import { describe, expect, it } from "vitest";
import { compareVersions, isNewer, parseVersion, type Version } from "../../src/releases/version.js";

function v(s: string): Version {
  const parsed = parseVersion(s);
  if (parsed === undefined) throw new Error(`test version ${s} does not parse`);
  return parsed;
}

describe("parseVersion", () => {
  it("parses core, prerelease and build parts", () => {
    expect(parseVersion("1.2.3")).toEqual({ major: 1, minor: 2, patch: 3, prerelease: [], build: [] });
    expect(parseVersion("1.0.0-rc.1+sha.5114f85")).toEqual({
      major: 1,
      minor: 0,
      patch: 0,
      prerelease: ["rc", "1"],
      build: ["sha", "5114f85"],
    });
    expect(parseVersion("0.0.0-0.3.7")?.prerelease).toEqual(["0", "3", "7"]);
    expect(parseVersion("1.0.0-x-y-z.--")?.prerelease).toEqual(["x-y-z", "--"]);
    expect(parseVersion("1.0.0+001")?.build).toEqual(["001"]);
  });

  it("accepts a leading v as in git tags", () => {
    expect(parseVersion("v1.4.0")).toEqual(parseVersion("1.4.0"));
    expect(parseVersion("v1.4.0")?.minor).toBe(4);
  });

  it.each([
    "",
    "1",
    "1.2",
    "1.2.3.4",
    "01.2.3",
    "1.02.3",
    "1.2.03",
    "1.2.3-",
    "1.2.3-01",
    "1.2.3-alpha..1",
    "1.2.3+",
    "1.2.3+a..b",
    "1.2.3-alpha_1",
    "V1.2.3",
    "vv1.2.3",
    " 1.2.3",
    "1.2.3 ",
    "latest",
    "-1.2.3",
    "9007199254740992.0.0",
  ])("rejects %j", (s) => {
    expect(parseVersion(s)).toBeUndefined();
  });

  it("accepts the largest safe integer", () => {
    expect(parseVersion("9007199254740991.0.0")?.major).toBe(Number.MAX_SAFE_INTEGER);
  });
});

describe("compareVersions", () => {
  it("orders the semver.org precedence example", () => {
    const ordered = [
      "1.0.0-alpha",
      "1.0.0-alpha.1",
      "1.0.0-alpha.beta",
      "1.0.0-beta",
      "1.0.0-beta.2",
      "1.0.0-beta.11",
      "1.0.0-rc.1",
      "1.0.0",
      "2.0.0",
      "2.1.0",
      "2.1.1",
    ];
    for (let i = 0; i < ordered.length; i++) {
      for (let j = 0; j < ordered.length; j++) {
        const expected = i < j ? -1 : i > j ? 1 : 0;
        expect(
          compareVersions(v(ordered[i] ?? ""), v(ordered[j] ?? "")),
          `${ordered[i]} vs ${ordered[j]}`,
        ).toBe(expected);
      }
    }
  });

  it("compares numbers numerically, not as text", () => {
    expect(compareVersions(v("1.10.0"), v("1.9.0"))).toBe(1);
    expect(compareVersions(v("10.0.0"), v("9.99.99"))).toBe(1);
    expect(compareVersions(v("1.0.10"), v("1.0.9"))).toBe(1);
  });

  it("compares numeric prerelease identifiers of any size numerically", () => {
    expect(compareVersions(v("1.0.0-rc.10"), v("1.0.0-rc.9"))).toBe(1);
    expect(compareVersions(v("1.0.0-123456789012345678901"), v("1.0.0-99999999999999999999"))).toBe(1);
    expect(compareVersions(v("1.0.0-99999999999999999999"), v("1.0.0-123456789012345678901"))).toBe(-1);
  });

  it("ranks numeric identifiers below alphanumeric ones and compares text in ASCII order", () => {
    expect(compareVersions(v("1.0.0-1"), v("1.0.0-a"))).toBe(-1);
    expect(compareVersions(v("1.0.0-a"), v("1.0.0-1"))).toBe(1);
    expect(compareVersions(v("1.0.0-1a"), v("1.0.0-2"))).toBe(1);
    expect(compareVersions(v("1.0.0-Beta"), v("1.0.0-alpha"))).toBe(-1);
  });

  it("ignores build metadata and the v prefix", () => {
    expect(compareVersions(v("1.0.0+a"), v("1.0.0+b"))).toBe(0);
    expect(compareVersions(v("v1.0.0-rc.1+x"), v("1.0.0-rc.1"))).toBe(0);
  });
});

describe("isNewer", () => {
  it("says whether the candidate has higher precedence", () => {
    expect(isNewer("v1.4.0", "v1.3.9")).toBe(true);
    expect(isNewer("1.4.0", "v1.4.0")).toBe(false);
    expect(isNewer("v1.4.0-rc.1", "v1.3.0")).toBe(true);
    expect(isNewer("v1.4.0-rc.1", "v1.4.0")).toBe(false);
    expect(isNewer("v1.4.0", "v1.4.0-rc.1")).toBe(true);
    expect(isNewer("v1.3.0", "v1.4.0")).toBe(false);
  });

  it("is undefined when either side is not semver", () => {
    expect(isNewer("v1.4.0", "dev")).toBeUndefined();
    expect(isNewer("nightly", "v1.4.0")).toBeUndefined();
    expect(isNewer("1.4", "1.3")).toBeUndefined();
  });
});
