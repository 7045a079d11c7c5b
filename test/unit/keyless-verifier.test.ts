/**
 * KeylessVerifier against real Sigstore bundles made offline by a mock Fulcio, CT log, Rekor and
 * TSA (test/helpers/sigstore-fixtures.ts): the accepted bundle, and every refusal with its reason
 * and message. Also loading the trusted root, shipped or overridden.
 */
import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import nock from "nock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UpdaterError } from "../../src/errors.js";
import { KeylessVerifier, loadTrustedRoot } from "../../src/verify/keyless-verifier.js";
import {
  type FixtureSignOptions,
  GITHUB_ACTIONS_ISSUER,
  type MockSigstore,
  startMockSigstore,
} from "../helpers/sigstore-fixtures.js";

const IDENTITY = "https://github.com/acme/processgit/.github/workflows/release.yml@refs/tags/v1.2.0";
const POLICY_IDENTITY = String.raw`https://github\.com/acme/processgit/\.github/workflows/release\.yml@refs/tags/v.*`;
const ANCHORED_POLICY = `^(?:${POLICY_IDENTITY})$`;
const MANIFEST = new TextEncoder().encode(
  `${JSON.stringify({ schema_version: 1, name: "processgit", version: "1.2.0", tag: "v1.2.0" }, null, 2)}\n`,
);
const CHECKOUT = join(import.meta.dirname, "..", "..");

type BundleJson = {
  verificationMaterial: Record<string, unknown> & { tlogEntries: unknown[] };
  messageSignature: { messageDigest: { algorithm: string; digest: string }; signature: string };
};

let sigstore: MockSigstore;
let verifier: KeylessVerifier;
let goodBundle: string;

beforeAll(async () => {
  sigstore = await startMockSigstore();
  verifier = policyVerifier();
  goodBundle = await sigstore.sign(MANIFEST, { identity: IDENTITY });
});

afterAll(() => sigstore.close());

function policyVerifier(overrides: { identity?: string; issuer?: string; trustedRoot?: unknown } = {}) {
  return new KeylessVerifier({
    trustedRoot: overrides.trustedRoot ?? sigstore.trustedRoot,
    issuer: overrides.issuer ?? GITHUB_ACTIONS_ISSUER,
    identity: overrides.identity ?? POLICY_IDENTITY,
  });
}

function bundleFor(options: Partial<FixtureSignOptions>, bytes: Uint8Array = MANIFEST): Promise<string> {
  return sigstore.sign(bytes, { identity: IDENTITY, ...options });
}

function edit(bundle: string, change: (doc: BundleJson) => void): Uint8Array {
  const doc = JSON.parse(bundle) as BundleJson;
  change(doc);
  return new TextEncoder().encode(JSON.stringify(doc));
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function tampered(): Uint8Array {
  return new TextEncoder().encode(new TextDecoder().decode(MANIFEST).replace("1.2.0", "6.6.6"));
}

/** The refusal a verify() call ends with; fails the test when it resolves. */
async function refusal(
  result: Promise<unknown>,
  reason: string,
  message: RegExp,
  bundle?: string,
): Promise<UpdaterError> {
  const err = await result.then(
    (value) => {
      throw new Error(`expected a refusal (${reason}), got ${JSON.stringify(value)}`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpdaterError);
  const error = err as UpdaterError;
  expect({ code: error.code, reason: error.reason }).toEqual({ code: "failed_precondition", reason });
  expect(error.message).toMatch(/^release\.json signature refused: /);
  expect(error.message).toMatch(message);
  if (bundle !== undefined) {
    for (const blob of longStrings(JSON.parse(bundle))) expect(error.message).not.toContain(blob);
  }
  return error;
}

/** The certificates, signatures, digests and log bodies of a bundle: none belongs in a message. */
function longStrings(value: unknown): string[] {
  if (typeof value === "string")
    return value.length >= 40 && !value.startsWith("application/") ? [value] : [];
  if (typeof value !== "object" || value === null) return [];
  return Object.values(value).flatMap(longStrings);
}

function constructorError(make: () => unknown): UpdaterError {
  try {
    make();
  } catch (err) {
    expect(err).toBeInstanceOf(UpdaterError);
    return err as UpdaterError;
  }
  throw new Error("expected the constructor to throw");
}

function foreignKey(): { spki: Buffer; keyId: string } {
  const spki = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey.export({
    format: "der",
    type: "spki",
  });
  return { spki, keyId: createHash("sha256").update(spki).digest("base64") };
}

describe("KeylessVerifier: a release signed by the pinned workflow", () => {
  it("is accepted, with the certificate identity, issuer and manifest digest", async () => {
    expect(verifier.signatureAsset).toBe("release.json.sigstore.json");
    const verification = await verifier.verify(MANIFEST, new TextEncoder().encode(goodBundle));
    expect(verification).toEqual({
      policy: "keyless",
      identity: IDENTITY,
      issuer: GITHUB_ACTIONS_ISSUER,
      manifestSha256: sha256(MANIFEST),
    });
    expect(verification.manifestSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("is accepted with a Rekor entry alone: its integrated time proves the signing time", async () => {
    const bundle = await bundleFor({ proof: "tlog" });
    expect(JSON.stringify(JSON.parse(bundle).verificationMaterial)).not.toContain("rfc3161");
    await expect(verifier.verify(MANIFEST, new TextEncoder().encode(bundle))).resolves.toMatchObject({
      identity: IDENTITY,
    });
  });

  it("never lets the network out: only the intercepted mock services answer", async () => {
    const error = await fetch("https://example.com/").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String((error as Error | undefined)?.cause)).toMatch(
      /Nock: Disallowed net connect for "example\.com:443/,
    );
    expect(nock.isActive()).toBe(true);
  });
});

describe("KeylessVerifier: SIGNATURE_INVALID", () => {
  it("refuses a release.json changed after signing, naming both digests", async () => {
    const changed = tampered();
    const error = await refusal(
      verifier.verify(changed, new TextEncoder().encode(goodBundle)),
      "SIGNATURE_INVALID",
      /the file was changed after signing, or the bundle belongs to another file/,
      goodBundle,
    );
    expect(error.message).toContain(sha256(MANIFEST));
    expect(error.message).toContain(sha256(changed));
  });

  it("refuses a valid bundle made for another file", async () => {
    const other = await bundleFor({}, new TextEncoder().encode('{"schema_version":1,"tag":"v1.2.1"}'));
    await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(other)),
      "SIGNATURE_INVALID",
      new RegExp(`release\\.json has sha256 ${sha256(MANIFEST)}`),
      other,
    );
  });

  it("refuses a bundle whose digest was edited to match a changed release.json", async () => {
    const changed = tampered();
    const bundle = edit(goodBundle, (doc) => {
      doc.messageSignature.messageDigest.digest = createHash("sha256").update(changed).digest("base64");
    });
    await refusal(
      verifier.verify(changed, bundle),
      "SIGNATURE_INVALID",
      /transparency log entry does not record this bundle's signature \(.*digest mismatch/,
    );
  });

  it.each([
    ["the timestamp", "tlog-and-timestamp", /the RFC 3161 timestamp was issued for another signature/],
    [
      "the Rekor entry",
      "tlog",
      /does not record this bundle's signature \(.*signature mismatch\): the bundle was altered/,
    ],
  ] as const)(
    "refuses a signature swapped in from another bundle, caught by %s",
    async (_case, proof, message) => {
      const original = await bundleFor({ proof });
      const other = JSON.parse(await bundleFor({ proof })) as BundleJson;
      const bundle = edit(original, (doc) => {
        doc.messageSignature.signature = other.messageSignature.signature;
      });
      await refusal(verifier.verify(MANIFEST, bundle), "SIGNATURE_INVALID", message, original);
    },
  );
});

describe("KeylessVerifier: SIGNER_UNTRUSTED", () => {
  it.each([
    [
      "another repository",
      "https://github.com/other/processgit/.github/workflows/release.yml@refs/tags/v1.2.0",
    ],
    ["another workflow", "https://github.com/acme/processgit/.github/workflows/nightly.yml@refs/tags/v1.2.0"],
    [
      "a branch instead of a tag",
      "https://github.com/acme/processgit/.github/workflows/release.yml@refs/heads/main",
    ],
    [
      "the lookalike owner notacme",
      "https://github.com/notacme/processgit/.github/workflows/release.yml@refs/tags/v1.2.0",
    ],
    [
      "the lookalike repository processgit-evil",
      "https://github.com/acme/processgit-evil/.github/workflows/release.yml@refs/tags/v1.2.0",
    ],
  ])("refuses %s, saying what was expected and found", async (_case, identity) => {
    const bundle = await bundleFor({ identity });
    const error = await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(bundle)),
      "SIGNER_UNTRUSTED",
      /signed by .* \(issuer .*\), but the policy requires an identity matching .* issued by /,
      bundle,
    );
    expect(error.message).toContain(`signed by ${identity} (issuer ${GITHUB_ACTIONS_ISSUER})`);
    expect(error.message).toContain(`matching ${ANCHORED_POLICY} issued by ${GITHUB_ACTIONS_ISSUER}`);
  });

  it.each([
    [
      "a pattern for part of the identity matches no lookalike owner",
      String.raw`acme/processgit/\.github/workflows/release\.yml@refs/tags/v.*`,
      "https://github.com/notacme/processgit/.github/workflows/release.yml@refs/tags/v1.2.0",
    ],
    [
      "a pinned tag matches no longer tag",
      String.raw`https://github\.com/acme/processgit/\.github/workflows/release\.yml@refs/tags/v1\.2\.0`,
      "https://github.com/acme/processgit/.github/workflows/release.yml@refs/tags/v1.2.0-evil",
    ],
    [
      "an alternation is anchored as a whole",
      String.raw`https://github\.com/acme/processgit/\.github/workflows/release\.yml@refs/tags/v1\.2\.0|https://github\.com/acme/processgit/\.github/workflows/hotfix\.yml@refs/tags/v1\.2\.0`,
      "https://github.com/acme/processgit/.github/workflows/release.yml@refs/tags/v1.2.0-evil",
    ],
  ])("anchors the identity pattern: %s", async (_case, pattern, identity) => {
    expect(new RegExp(pattern).test(identity)).toBe(true);
    const bundle = await bundleFor({ identity });
    await refusal(
      policyVerifier({ identity: pattern }).verify(MANIFEST, new TextEncoder().encode(bundle)),
      "SIGNER_UNTRUSTED",
      new RegExp(`signed by ${identity.replaceAll(".", "\\.")} `),
    );
  });

  it.each([
    ["another issuer", "https://gitlab.com"],
    ["an issuer that only starts like the pinned one", `${GITHUB_ACTIONS_ISSUER}.evil.example`],
  ])("refuses %s, naming both issuers", async (_case, issuer) => {
    const bundle = await bundleFor({ issuer });
    const error = await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(bundle)),
      "SIGNER_UNTRUSTED",
      new RegExp(`\\(issuer ${issuer.replaceAll(".", "\\.")}\\)`),
      bundle,
    );
    expect(error.message).toContain(`issued by ${GITHUB_ACTIONS_ISSUER}`);
  });
});

describe("KeylessVerifier: CERTIFICATE_UNTRUSTED", () => {
  it("refuses a certificate from a CA the trusted root does not hold", async () => {
    const bundle = await bundleFor({ ca: "untrusted" });
    await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(bundle)),
      "CERTIFICATE_UNTRUSTED",
      /the signing certificate was not issued by a certificate authority of the trusted root/,
      bundle,
    );
  });

  it.each([
    ["expired", "expired"],
    ["not yet valid", "not-yet-valid"],
  ] as const)("refuses a certificate %s at the signing time, with both times", async (_case, certificate) => {
    const bundle = await bundleFor({ certificate });
    const error = await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(bundle)),
      "CERTIFICATE_UNTRUSTED",
      /the signing certificate \(valid \S+Z to \S+Z\) was not valid when the bundle was signed \(.*\)$/,
      bundle,
    );
    expect(error.message).toMatch(/[(, ]timestamp \S+Z[,)]/);
    expect(error.message).toMatch(/[(, ]transparency log \S+Z[,)]/);
  });

  it("refuses a bundle with neither a Rekor entry nor a timestamp", async () => {
    const bundle = await bundleFor({ proof: "none" });
    await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(bundle)),
      "CERTIFICATE_UNTRUSTED",
      /nothing proves when the bundle was signed/,
      bundle,
    );
  });

  it("refuses a bundle with a timestamp but no Rekor entry", async () => {
    const bundle = await bundleFor({ proof: "timestamp" });
    await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(bundle)),
      "CERTIFICATE_UNTRUSTED",
      /the bundle has no transparency log \(Rekor\) entry; one is required/,
      bundle,
    );
  });

  it("refuses a Rekor entry that no log of the trusted root signed", async () => {
    const root = structuredClone(sigstore.trustedRoot) as { tlogs: Record<string, unknown>[] };
    const key = foreignKey();
    root.tlogs = root.tlogs.map((log) => ({
      ...log,
      publicKey: { ...(log.publicKey as object), rawBytes: key.spki.toString("base64") },
    }));
    await refusal(
      policyVerifier({ trustedRoot: root }).verify(MANIFEST, new TextEncoder().encode(goodBundle)),
      "CERTIFICATE_UNTRUSTED",
      /the transparency log entry is not proven by a Rekor log of the trusted root/,
    );
  });

  it("refuses a timestamp from a timestamp authority the trusted root does not hold", async () => {
    const root = { ...sigstore.trustedRoot, timestampAuthorities: [] };
    await refusal(
      policyVerifier({ trustedRoot: root }).verify(MANIFEST, new TextEncoder().encode(goodBundle)),
      "CERTIFICATE_UNTRUSTED",
      /the RFC 3161 timestamp is not from a timestamp authority of the trusted root/,
    );
  });

  it("refuses the mock's bundles under the shipped public-good root", async () => {
    const shipped = policyVerifier({ trustedRoot: loadTrustedRoot() });
    await refusal(
      shipped.verify(MANIFEST, new TextEncoder().encode(goodBundle)),
      "CERTIFICATE_UNTRUSTED",
      /not issued by a certificate authority of the trusted root|not from a timestamp authority/,
    );
  });
});

describe("KeylessVerifier: BUNDLE_INVALID", () => {
  it("refuses a DSSE (attestation) bundle even though it carries release.json as its payload", async () => {
    const bundle = await bundleFor({ format: "dsse" });
    expect(JSON.parse(bundle)).toHaveProperty("dsseEnvelope");
    await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(bundle)),
      "BUNDLE_INVALID",
      /the bundle holds a DSSE envelope .*; expected a message-signature bundle/,
      bundle,
    );
  });

  it("refuses a bundle that names a public key instead of a certificate", async () => {
    const bundle = edit(goodBundle, (doc) => {
      doc.verificationMaterial = { publicKey: { hint: "release-key" }, tlogEntries: [] };
    });
    await refusal(
      verifier.verify(MANIFEST, bundle),
      "BUNDLE_INVALID",
      /names a public key, not a Fulcio certificate/,
    );
  });

  it("refuses a bundle whose certificate is not DER", async () => {
    const bundle = edit(goodBundle, (doc) => {
      const chain = doc.verificationMaterial.x509CertificateChain as { certificates: { rawBytes: string }[] };
      for (const cert of chain.certificates)
        cert.rawBytes = Buffer.from("not a certificate").toString("base64");
    });
    await refusal(
      verifier.verify(MANIFEST, bundle),
      "BUNDLE_INVALID",
      /^release\.json signature refused: the bundle cannot be read: /,
    );
  });

  it.each([
    [
      "truncated JSON",
      '{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.2","verificationMaterial":{',
      /the bundle is not UTF-8 JSON/,
    ],
    ["an empty file", "", /the bundle is not UTF-8 JSON/],
    [
      "JSON that is no bundle",
      '{"hello":"world"}',
      /the file is not a Sigstore bundle: .*\(invalid: mediaType/,
    ],
    ["a JSON array", "[]", /the file is not a Sigstore bundle/],
  ])("refuses %s with a clear message", async (_case, text, message) => {
    const error = await refusal(
      verifier.verify(MANIFEST, new TextEncoder().encode(text)),
      "BUNDLE_INVALID",
      message,
    );
    expect(error.message.length).toBeLessThan(400);
  });

  it("refuses bytes that are not UTF-8", async () => {
    await refusal(
      verifier.verify(MANIFEST, new Uint8Array([0xff, 0xfe, 0x7b])),
      "BUNDLE_INVALID",
      /not UTF-8 JSON/,
    );
  });
});

describe("KeylessVerifier: configuration", () => {
  it.each([
    [
      "does not compile",
      String.raw`https://github\.com/acme/(processgit`,
      /is not a valid regular expression/,
    ],
    ["would escape the anchoring group", "x)|(.*", /is not a valid regular expression/],
    ["is empty", " ", /the signer identity must not be empty/],
  ])("refuses an identity pattern that %s", (_case, identity, message) => {
    const error = constructorError(() => policyVerifier({ identity }));
    expect({ code: error.code, reason: error.reason }).toEqual({
      code: "invalid_argument",
      reason: "SIGNER_POLICY_INVALID",
    });
    expect(error.message).toMatch(message);
  });

  it("refuses an empty issuer", () => {
    expect(constructorError(() => policyVerifier({ issuer: "" })).message).toMatch(
      /issuer must not be empty/,
    );
  });

  it.each([
    ["not an object", "trusted_root.json", /must be a JSON object/],
    ["another media type", { mediaType: "application/json" }, /has mediaType "application\/json"; expected/],
    [
      "no certificate authorities",
      { mediaType: "application/vnd.dev.sigstore.trustedroot+json;version=0.1", tlogs: [{}], ctlogs: [{}] },
      /lists no certificateAuthorities/,
    ],
  ])("refuses a trusted root that is %s", (_case, trustedRoot, message) => {
    const error = constructorError(() => policyVerifier({ trustedRoot }));
    expect({ code: error.code, reason: error.reason }).toEqual({
      code: "failed_precondition",
      reason: "TRUSTED_ROOT_INVALID",
    });
    expect(error.message).toMatch(message);
  });

  it("refuses a trusted root whose keys cannot be parsed", () => {
    const root = structuredClone(sigstore.trustedRoot) as { tlogs: { publicKey: { rawBytes: string } }[] };
    for (const log of root.tlogs) log.publicKey.rawBytes = Buffer.from("not a key").toString("base64");
    expect(constructorError(() => policyVerifier({ trustedRoot: root })).message).toMatch(
      /^the trusted root cannot be used: /,
    );
  });
});

describe("loadTrustedRoot", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "trusted-root-"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("loads the shipped public-good root, usable by a verifier", () => {
    const root = loadTrustedRoot() as { mediaType: string; tlogs: { baseUrl: string }[] };
    expect(root.mediaType).toBe("application/vnd.dev.sigstore.trustedroot+json;version=0.1");
    expect(root.tlogs.map((log) => log.baseUrl)).toContain("https://rekor.sigstore.dev");
    expect(() => policyVerifier({ trustedRoot: root })).not.toThrow();
  });

  it("finds the shipped root from the built module in dist/src too", async () => {
    const built = pathToFileURL(join(CHECKOUT, "dist", "src", "verify", "keyless-verifier.js")).href;
    const mod = (await import(built)) as { loadTrustedRoot: typeof loadTrustedRoot };
    expect(mod.loadTrustedRoot()).toEqual(loadTrustedRoot());
  });

  it("loads an override path", async () => {
    const file = join(dir, "mock-root.json");
    await writeFile(file, JSON.stringify(sigstore.trustedRoot));
    expect(loadTrustedRoot(file)).toEqual(sigstore.trustedRoot);
  });

  it.each([
    [
      "a missing file",
      "missing.json",
      undefined,
      /cannot read the Sigstore trusted root .*missing\.json: ENOENT/,
    ],
    ["garbage", "garbage.json", "\u0000not json", /the Sigstore trusted root .*garbage\.json is not JSON/],
    [
      "another document",
      "bundle.json",
      '{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}',
      /bundle\.json has mediaType "application\/vnd\.dev\.sigstore\.bundle\.v0\.3\+json"; expected /,
    ],
  ])("refuses %s with a clear error", async (_case, name, content, message) => {
    const file = join(dir, name);
    if (content !== undefined) await writeFile(file, content);
    let error: unknown;
    try {
      loadTrustedRoot(file);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(UpdaterError);
    expect((error as UpdaterError).reason).toBe("TRUSTED_ROOT_INVALID");
    expect((error as UpdaterError).message).toMatch(message);
  });
});
