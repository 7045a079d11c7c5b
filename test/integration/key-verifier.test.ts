/**
 * KeyVerifier (key-based release.json signatures) against the real cosign CLI: cosign makes the key
 * pairs and signs the fixtures, and for every case the updater's verdict must equal what
 * `cosign verify-blob --key` says about the same files. Plus node-only cases: which keys the
 * constructor refuses, the fingerprint operators compute with openssl, the Verification shape, and
 * the refusals that happen before any cryptography (empty, oversized, not base64).
 *
 * cosign stays offline: signing skips the transparency log, verification skips it, and the trust
 * root fetch that `verify-blob` attempts anyway goes to a proxy on 127.0.0.1 that refuses it.
 */
import { execFile } from "node:child_process";
import { createHash, createPublicKey, generateKeyPairSync, sign } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UpdaterError } from "../../src/errors.js";
import type { Verification } from "../../src/orchestrator/job.js";
import { KeyVerifier, loadPublicKey } from "../../src/verify/key-verifier.js";
import { cosignPath } from "../helpers/tools.js";

const MANIFEST = `${JSON.stringify(
  {
    schema_version: 1,
    name: "processgit",
    version: "1.4.2",
    tag: "v1.4.2",
    image: {
      registry: "ghcr.io",
      repository: "processgit/processgit",
      tag: "1.4.2",
      digest: `sha256:${"ab".repeat(32)}`,
    },
  },
  null,
  2,
)}\n`;

let dir: string;
let proxy: Server;
let proxyUrl: string;
let fixturesMade: Promise<void> | undefined;
/** The first request line of every connection the loopback proxy refused. */
const proxied: string[] = [];

interface CosignResult {
  code: number;
  output: string;
}

/** Runs cosign in `dir` with a clean environment that keeps it on loopback. */
function cosign(args: string[]): Promise<CosignResult> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: join(dir, "home"),
    TUF_ROOT: join(dir, "tuf"),
    COSIGN_PASSWORD: "",
    HTTPS_PROXY: proxyUrl,
    HTTP_PROXY: proxyUrl,
    ALL_PROXY: proxyUrl,
    NO_PROXY: "",
  };
  return new Promise((resolve, reject) => {
    execFile(
      cosignPath(),
      args,
      { cwd: dir, env, timeout: 20_000, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") {
          reject(new Error(`cosign ${args.join(" ")} failed to run: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: typeof err?.code === "number" ? err.code : 0, output: `${stdout}${stderr}` });
      },
    );
  });
}

async function cosignOk(args: string[]): Promise<void> {
  const r = await cosign(args);
  if (r.code !== 0) throw new Error(`cosign ${args.join(" ")} exited ${r.code}:\n${r.output}`);
}

/** What `cosign verify-blob` says about `manifest` and `signature` (file names in `dir`). */
async function cosignVerdict(manifest: string, signature: string): Promise<{ ok: boolean; output: string }> {
  const r = await cosign([
    "verify-blob",
    "--key",
    "cosign.pub",
    "--signature",
    signature,
    "--insecure-ignore-tlog=true",
    manifest,
  ]);
  // Anything cosign tried to fetch must have gone to the loopback proxy, which refused it.
  for (const m of r.output.matchAll(/Get "([^"]+)"/g)) {
    const host = new URL(m[1] ?? "").host;
    expect(
      proxied.some((line) => line.includes(host)),
      `cosign fetched ${m[1]} without the loopback proxy`,
    ).toBe(true);
  }
  return { ok: r.code === 0 && /Verified OK/.test(r.output), output: r.output.trim() };
}

type Verdict = { ok: true; verification: Verification } | { ok: false; error: UpdaterError };

async function updaterVerdict(
  verifier: KeyVerifier,
  manifest: Uint8Array,
  signature: Uint8Array,
): Promise<Verdict> {
  try {
    return { ok: true, verification: await verifier.verify(manifest, signature) };
  } catch (err) {
    if (!(err instanceof UpdaterError)) throw err;
    return { ok: false, error: err };
  }
}

async function refusal(
  verifier: KeyVerifier,
  manifest: Uint8Array,
  signature: Uint8Array,
): Promise<UpdaterError> {
  const v = await updaterVerdict(verifier, manifest, signature);
  if (v.ok) throw new Error("the updater accepted a signature it must refuse");
  return v.error;
}

function constructionError(pem: string): UpdaterError {
  try {
    new KeyVerifier(pem);
  } catch (err) {
    if (err instanceof UpdaterError) return err;
    throw err;
  }
  throw new Error("the key was accepted");
}

/** The openssl-style fingerprint, from the DER bytes inside the PEM file as written. */
function fingerprintOfPemFile(pem: string): string {
  const body = pem.replace(/-----BEGIN PUBLIC KEY-----|-----END PUBLIC KEY-----/g, "").replace(/\s+/g, "");
  const der = Buffer.from(body, "base64");
  return `SHA256:${createHash("sha256").update(der).digest("base64").replace(/=+$/, "")}`;
}

/** The same ECDSA signature as IEEE P1363 (r || s, 32 bytes each) instead of DER. */
function derToP1363(der: Buffer): Buffer {
  const rLen = der[3] ?? 0;
  const r = der.subarray(4, 4 + rLen);
  const s = der.subarray(6 + rLen);
  const pad = (n: Buffer) =>
    Buffer.concat([Buffer.alloc(32), n.subarray(n.length - Math.min(n.length, 32))]).subarray(-32);
  return Buffer.concat([pad(r), pad(s)]);
}

async function file(name: string): Promise<Buffer> {
  return readFile(join(dir, name));
}

/**
 * Makes the key pairs and signed fixtures with cosign, once, on first use: a test that needs them
 * awaits this, so a missing cosign fails each of those tests with the message of cosignPath().
 */
function fixtures(): Promise<void> {
  fixturesMade ??= makeFixtures();
  return fixturesMade;
}

async function makeFixtures(): Promise<void> {
  await cosignOk(["generate-key-pair"]);
  await cosignOk(["generate-key-pair", "--output-key-prefix", "other"]);
  await writeFile(join(dir, "release.json"), MANIFEST);
  const tampered = Buffer.from(MANIFEST);
  const at = tampered.indexOf("1.4.2");
  tampered[at + 4] = "3".charCodeAt(0);
  await writeFile(join(dir, "tampered.json"), tampered);
  await writeFile(join(dir, "other.json"), MANIFEST.replace("1.4.2", "1.4.1"));

  const signBlob = (key: string, blob: string, out: string) =>
    cosignOk(["sign-blob", "--key", key, "--tlog-upload=false", "--yes", blob, "--output-signature", out]);
  await signBlob("cosign.key", "release.json", "release.json.sig");
  await signBlob("other.key", "release.json", "other-key.sig");
  await signBlob("cosign.key", "other.json", "other-file.sig");

  const good = (await file("release.json.sig")).toString("latin1");
  await writeFile(join(dir, "newline.sig"), `${good}\n`);
  await writeFile(join(dir, "truncated.sig"), good.slice(0, 48));
  await writeFile(join(dir, "truncated-odd.sig"), good.slice(0, good.length - 1));
  await writeFile(join(dir, "garbage.sig"), "this is not a signature at all!\n");
  await writeFile(join(dir, "garbage-base64.sig"), Buffer.alloc(71, 0x5a).toString("base64"));
  await writeFile(join(dir, "empty.sig"), "");
  await writeFile(join(dir, "p1363.sig"), derToP1363(Buffer.from(good, "base64")).toString("base64"));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "key-verifier-"));
  await mkdir(join(dir, "home"));
  proxy = createServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", (chunk) => {
      proxied.push(chunk.toString("latin1").split("\r\n")[0] ?? "");
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const address = proxy.address();
  if (address === null || typeof address === "string") throw new Error("the proxy has no port");
  proxyUrl = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await new Promise((resolve) => proxy?.close(resolve));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("KeyVerifier agrees with cosign verify-blob, case by case", () => {
  const cases: Array<{ name: string; manifest: string; signature: string; valid: boolean; why?: RegExp }> = [
    { name: "good signature", manifest: "release.json", signature: "release.json.sig", valid: true },
    {
      name: "good signature with a trailing newline",
      manifest: "release.json",
      signature: "newline.sig",
      valid: true,
    },
    {
      name: "tampered manifest (one byte changed)",
      manifest: "tampered.json",
      signature: "release.json.sig",
      valid: false,
      why: /does not verify release\.json with the pinned key SHA256:/,
    },
    {
      name: "signature from another key",
      manifest: "release.json",
      signature: "other-key.sig",
      valid: false,
      why: /does not verify release\.json with the pinned key SHA256:/,
    },
    {
      name: "signature for a different file",
      manifest: "release.json",
      signature: "other-file.sig",
      valid: false,
      why: /does not verify release\.json with the pinned key SHA256:/,
    },
    {
      name: "truncated signature (first half)",
      manifest: "release.json",
      signature: "truncated.sig",
      valid: false,
      why: /not of an ASN\.1 DER ECDSA signature/,
    },
    {
      name: "truncated signature (last character cut)",
      manifest: "release.json",
      signature: "truncated-odd.sig",
      valid: false,
      why: /is not base64 text/,
    },
    {
      name: "garbage signature (text)",
      manifest: "release.json",
      signature: "garbage.sig",
      valid: false,
      why: /is not base64 text/,
    },
    {
      name: "garbage signature (valid base64 of junk)",
      manifest: "release.json",
      signature: "garbage-base64.sig",
      valid: false,
      why: /not of an ASN\.1 DER ECDSA signature/,
    },
    {
      name: "empty signature",
      manifest: "release.json",
      signature: "empty.sig",
      valid: false,
      why: /is empty/,
    },
  ];

  for (const c of cases) {
    it(`${c.name}: ${c.valid ? "both accept" : "both refuse"}`, async () => {
      await fixtures();
      const verifier = new KeyVerifier(loadPublicKey(join(dir, "cosign.pub")));
      const manifest = await file(c.manifest);
      const signature = await file(c.signature);
      const theirs = await cosignVerdict(c.manifest, c.signature);
      const ours = await updaterVerdict(verifier, manifest, signature);

      expect(theirs.ok, `cosign verify-blob said:\n${theirs.output}`).toBe(c.valid);
      expect(ours.ok, ours.ok ? "accepted" : ours.error.message).toBe(theirs.ok);
      if (ours.ok) {
        expect(ours.verification.manifestSha256).toBe(createHash("sha256").update(manifest).digest("hex"));
      } else {
        expect(ours.error.code).toBe("failed_precondition");
        expect(ours.error.reason).toBe("SIGNATURE_INVALID");
        expect(ours.error.message).toMatch(c.why ?? /^$/);
        const sigText = signature.toString("latin1").trim();
        if (sigText.length >= 8) expect(ours.error.message).not.toContain(sigText);
        expect(ours.error.message).not.toContain("processgit/processgit");
      }
    });
  }

  it("a raw IEEE P1363 signature: cosign falls back to it and accepts, the updater refuses (DER only)", async () => {
    // A known, deliberate difference: cosign sign-blob --key always writes DER; the updater accepts
    // exactly that and nothing that another tool might produce.
    await fixtures();
    const verifier = new KeyVerifier(loadPublicKey(join(dir, "cosign.pub")));
    const theirs = await cosignVerdict("release.json", "p1363.sig");
    expect(theirs.ok, theirs.output).toBe(true);
    const err = await refusal(verifier, await file("release.json"), await file("p1363.sig"));
    expect(err.reason).toBe("SIGNATURE_INVALID");
    expect(err.message).toMatch(/not of an ASN\.1 DER ECDSA signature/);
  });
});

describe("KeyVerifier (node only)", () => {
  const manifest = Buffer.from(MANIFEST);

  function p256(): { publicPem: string; sign: (data: Uint8Array) => Buffer } {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    return {
      publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
      sign: (data) => sign("sha256", data, privateKey),
    };
  }

  it("accepts a P-256 key made by node:crypto and a DER signature made by node:crypto", async () => {
    const key = p256();
    const verifier = new KeyVerifier(key.publicPem);
    const verdict = await updaterVerdict(
      verifier,
      manifest,
      Buffer.from(key.sign(manifest).toString("base64")),
    );
    expect(verdict.ok).toBe(true);
  });

  it("returns exactly the key Verification: policy, fingerprint, manifest sha256", async () => {
    const key = p256();
    const verifier = new KeyVerifier(key.publicPem);
    const v = await verifier.verify(manifest, Buffer.from(key.sign(manifest).toString("base64")));
    expect(v).toStrictEqual({
      policy: "key",
      keyFingerprint: fingerprintOfPemFile(key.publicPem),
      manifestSha256: createHash("sha256").update(manifest).digest("hex"),
    });
    expect(v.manifestSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("the fingerprint is the openssl-style SHA256 of the DER SubjectPublicKeyInfo, unpadded base64", async () => {
    await fixtures();
    for (const pem of [p256().publicPem, await readFile(join(dir, "cosign.pub"), "utf8")]) {
      const verifier = new KeyVerifier(pem);
      expect(verifier.keyFingerprint).toBe(fingerprintOfPemFile(pem));
      expect(verifier.keyFingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    }
    const a = new KeyVerifier(await readFile(join(dir, "cosign.pub"), "utf8"));
    const b = new KeyVerifier(await readFile(join(dir, "other.pub"), "utf8"));
    expect(a.keyFingerprint).not.toBe(b.keyFingerprint);
    expect(a.signatureAsset).toBe("release.json.sig");
  });

  it("refuses an RSA key at construction, naming the setting", () => {
    const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const err = constructionError(publicKey.export({ type: "spki", format: "pem" }).toString());
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain("PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY");
    expect(err.message).toMatch(/the key is RSA; only ECDSA P-256/);
  });

  it("refuses ECDSA keys on other curves (P-384, secp256k1) at construction", () => {
    for (const curve of ["secp384r1", "secp256k1"]) {
      const { publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
      const err = constructionError(publicKey.export({ type: "spki", format: "pem" }).toString());
      expect(err.code).toBe("invalid_argument");
      expect(err.message).toContain("PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY");
      expect(err.message).toContain(`ECDSA key on ${curve}; only P-256`);
    }
  });

  it("refuses an Ed25519 key, a private key, and text that is no PEM public key", () => {
    const ed = generateKeyPairSync("ed25519");
    expect(
      constructionError(ed.publicKey.export({ type: "spki", format: "pem" }).toString()).message,
    ).toMatch(/the key is ED25519/);
    const ec = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const privatePem = ec.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    const priv = constructionError(privatePem);
    expect(priv.message).toMatch(/this is a private key/);
    expect(priv.message).not.toContain(privatePem.split("\n")[1]);
    expect(constructionError("hello").message).toMatch(/found no PEM block/);
    const broken = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    expect(constructionError(broken).message).toMatch(/does not parse/);
    for (const err of [priv, constructionError("hello"), constructionError(broken)]) {
      expect(err.code).toBe("invalid_argument");
      expect(err.message).toContain("PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY");
    }
  });

  it("refuses an oversized signature asset before decoding it", async () => {
    const key = p256();
    const verifier = new KeyVerifier(key.publicPem);
    const good = key.sign(manifest).toString("base64");
    // A valid signature padded with whitespace past 1 KiB: refused for its size alone.
    const big = Buffer.from(`${good}${" ".repeat(1025 - good.length)}`);
    expect(big.byteLength).toBe(1025);
    const err = await refusal(verifier, manifest, big);
    expect(err.reason).toBe("SIGNATURE_INVALID");
    expect(err.message).toMatch(/is 1025 bytes/);
    const atLimit = Buffer.from(`${good}${" ".repeat(1024 - good.length)}`);
    expect((await updaterVerdict(verifier, manifest, atLimit)).ok).toBe(true);
  });

  it("refuses base64url and whitespace inside the base64 text", async () => {
    const key = p256();
    const verifier = new KeyVerifier(key.publicPem);
    let der = key.sign(manifest);
    while (!/[+/]/.test(der.toString("base64"))) der = key.sign(manifest);
    for (const text of [
      der.toString("base64url"),
      `${der.toString("base64").slice(0, 20)}\n${der.toString("base64").slice(20)}`,
    ]) {
      const err = await refusal(verifier, manifest, Buffer.from(text));
      expect(err.message).toMatch(/is not base64 text/);
    }
  });

  it("loadPublicKey reads a PEM file and refuses missing, directory, empty and binary files clearly", async () => {
    const key = p256();
    const path = join(dir, "node.pub");
    await writeFile(path, key.publicPem);
    expect(loadPublicKey(path)).toBe(key.publicPem);
    await writeFile(join(dir, "empty.pub"), "\n");
    await writeFile(
      join(dir, "binary.pub"),
      createPublicKey(key.publicPem).export({ type: "spki", format: "der" }),
    );
    const cases: Array<[string, RegExp]> = [
      [join(dir, "missing.pub"), /cannot read .*missing\.pub: ENOENT/],
      [dir, /is not a regular file/],
      [join(dir, "empty.pub"), /empty\.pub is empty/],
      [join(dir, "binary.pub"), /holds binary data, not a PEM public key/],
    ];
    for (const [p, message] of cases) {
      let caught: unknown;
      try {
        loadPublicKey(p);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(UpdaterError);
      expect((caught as UpdaterError).code).toBe("invalid_argument");
      expect((caught as UpdaterError).message).toMatch(/^PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY: /);
      expect((caught as UpdaterError).message).toMatch(message);
    }
  });
});
