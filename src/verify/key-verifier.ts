/**
 * Key-based signature checking of release.json, for air-gapped operators who pin one ECDSA P-256
 * public key instead of a keyless (Sigstore identity) policy. Owns: reading and vetting the pinned
 * public key, decoding the `release.json.sig` asset that `cosign sign-blob --key` writes (base64 of
 * an ASN.1 DER ECDSA signature over SHA-256 of the file), checking it, and the key fingerprint that
 * names the key in job records. Uses node:crypto only; no network, no clock.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { UpdaterError } from "../errors.js";
import type { Verification } from "../orchestrator/job.js";
import type { ReleaseVerifier } from "../orchestrator/ports.js";

/** The configuration variable that names the pinned public key; error messages point at it. */
export const SIGNER_PUBLIC_KEY_ENV = "PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY";

/** The largest signature asset accepted, in bytes. A base64 DER P-256 signature is at most 96. */
export const MAX_SIGNATURE_BYTES = 1024;

/** The largest public key file accepted, in bytes. A PEM P-256 public key is 178. */
const MAX_KEY_FILE_BYTES = 16 * 1024;

const SIGNATURE_ASSET = "release.json.sig";
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Reads the PEM public key file named by `PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY` and returns its text,
 * for {@link KeyVerifier}'s constructor. Throws an UpdaterError (`invalid_argument`) naming the
 * variable and the path when the file is missing, unreadable, not a regular file, too large, empty
 * or not text. The key itself is vetted by the constructor.
 */
export function loadPublicKey(path: string): string {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw keyError(`${path} is not a regular file`);
    size = st.size;
  } catch (err) {
    if (err instanceof UpdaterError) throw err;
    throw keyError(`cannot read ${path}: ${errnoCode(err)}`, err);
  }
  if (size > MAX_KEY_FILE_BYTES) {
    throw keyError(
      `${path} is ${size} bytes; a PEM public key is a few hundred (at most ${MAX_KEY_FILE_BYTES} accepted)`,
    );
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw keyError(`cannot read ${path}: ${errnoCode(err)}`, err);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw keyError(
      `${path} holds binary data, not a PEM public key; convert a DER key with ` +
        "`openssl pkey -pubin -inform DER -in key.der -out key.pub`",
    );
  }
  if (text.trim() === "") throw keyError(`${path} is empty`);
  return text;
}

/**
 * Verifies `release.json.sig` (what `cosign sign-blob --key cosign.key release.json` prints) against
 * one pinned ECDSA P-256 public key.
 *
 * The fingerprint in {@link Verification.keyFingerprint} is `SHA256:` followed by the unpadded base64
 * of the SHA-256 of the key's DER SubjectPublicKeyInfo. An operator computes the same from the PEM
 * file with
 * `openssl pkey -pubin -in key.pub -outform DER | openssl dgst -sha256 -binary | base64`
 * and drops the trailing `=`.
 */
export class KeyVerifier implements ReleaseVerifier {
  readonly signatureAsset = SIGNATURE_ASSET;
  /** `SHA256:<unpadded base64>` of the pinned key's DER SubjectPublicKeyInfo. */
  readonly keyFingerprint: string;
  readonly #key: KeyObject;

  /**
   * @param pem The PEM text of the pinned key: exactly one `-----BEGIN PUBLIC KEY-----` block holding
   *   an ECDSA P-256 (prime256v1) key, e.g. cosign.pub from `cosign generate-key-pair`. Private keys,
   *   certificates, other key types and other curves are refused with an UpdaterError
   *   (`invalid_argument`) naming `PROCESSGIT_UPDATER_SIGNER_PUBLIC_KEY`.
   */
  constructor(pem: string) {
    this.#key = parsePublicKey(pem);
    const spki = this.#key.export({ type: "spki", format: "der" });
    this.keyFingerprint = `SHA256:${createHash("sha256").update(spki).digest("base64").replace(/=+$/, "")}`;
  }

  /**
   * Checks `signature` (the bytes of release.json.sig) over the exact bytes of `manifest`.
   * Resolves to a `key` Verification; rejects with an UpdaterError (`failed_precondition`, reason
   * SIGNATURE_INVALID) when the signature is empty, oversized, not base64, not a DER ECDSA signature,
   * or does not verify. Messages never quote the files.
   */
  async verify(manifest: Uint8Array, signature: Uint8Array): Promise<Verification> {
    const der = decodeSignature(signature);
    let ok: boolean;
    try {
      ok = cryptoVerify("sha256", manifest, this.#key, der);
    } catch {
      ok = false;
    }
    if (!ok) {
      throw signatureError(
        `${SIGNATURE_ASSET} does not verify release.json with the pinned key ${this.keyFingerprint}: ` +
          "release.json was changed after it was signed, or it was signed with another key or for another file",
      );
    }
    return {
      policy: "key",
      keyFingerprint: this.keyFingerprint,
      manifestSha256: createHash("sha256").update(manifest).digest("hex"),
    };
  }
}

function parsePublicKey(pem: string): KeyObject {
  const labels = [...pem.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]);
  if (labels.some((l) => l?.includes("PRIVATE KEY"))) {
    throw keyError(
      "this is a private key; give the updater only the public key (cosign.pub), and keep the private key off this host",
    );
  }
  if (labels.length !== 1 || labels[0] !== "PUBLIC KEY") {
    const found = labels.length === 0 ? "no PEM block" : `PEM blocks ${labels.join(", ")}`;
    throw keyError(`expected exactly one "-----BEGIN PUBLIC KEY-----" PEM block, found ${found}`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: "pem" });
  } catch (err) {
    throw keyError(`the PEM public key does not parse: ${(err as Error).message}`, err);
  }
  if (key.asymmetricKeyType !== "ec") {
    throw keyError(
      `the key is ${key.asymmetricKeyType?.toUpperCase() ?? "of an unknown type"}; only ECDSA P-256 keys are supported ` +
        "(`cosign generate-key-pair` makes one)",
    );
  }
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (curve !== "prime256v1") {
    throw keyError(
      `the key is an ECDSA key on ${curve ?? "explicit (unnamed) curve parameters"}; only P-256 (prime256v1) is supported ` +
        "(`cosign generate-key-pair` makes one)",
    );
  }
  return key;
}

/** The DER signature inside release.json.sig, or a SIGNATURE_INVALID error saying what is wrong. */
function decodeSignature(signature: Uint8Array): Buffer {
  if (signature.byteLength > MAX_SIGNATURE_BYTES) {
    throw signatureError(
      `${SIGNATURE_ASSET} is ${signature.byteLength} bytes; a base64 ECDSA P-256 signature is about 96 ` +
        `(at most ${MAX_SIGNATURE_BYTES} accepted)`,
    );
  }
  const text = Buffer.from(signature)
    .toString("latin1")
    .replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, "");
  if (text === "") throw signatureError(`${SIGNATURE_ASSET} is empty`);
  if (text.length % 4 !== 0 || !BASE64.test(text)) {
    throw signatureError(
      `${SIGNATURE_ASSET} is not base64 text (as \`cosign sign-blob --key\` writes); it is ${signature.byteLength} bytes that do not decode`,
    );
  }
  const der = Buffer.from(text, "base64");
  if (!isDerEcdsaSignature(der)) {
    throw signatureError(
      `${SIGNATURE_ASSET} is base64, but not of an ASN.1 DER ECDSA signature (a SEQUENCE of two INTEGERs); ` +
        "it may be truncated or made by another tool",
    );
  }
  return der;
}

/** Strict DER `SEQUENCE { INTEGER r, INTEGER s }` with P-256-sized positive integers. */
function isDerEcdsaSignature(der: Buffer): boolean {
  if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2 || der[1] >= 0x80) return false;
  let at = 2;
  for (let i = 0; i < 2; i++) {
    if (der[at] !== 0x02) return false;
    const len = der[at + 1];
    if (len === undefined || len < 1 || len > 33 || at + 2 + len > der.length) return false;
    const first = der[at + 2] ?? 0;
    const second = der[at + 3];
    if (first & 0x80) return false;
    if (len > 1 && first === 0 && second !== undefined && !(second & 0x80)) return false;
    at += 2 + len;
  }
  return at === der.length;
}

function keyError(detail: string, cause?: unknown): UpdaterError {
  return new UpdaterError("invalid_argument", `${SIGNER_PUBLIC_KEY_ENV}: ${detail}`, { cause });
}

function signatureError(message: string): UpdaterError {
  return new UpdaterError("failed_precondition", message, { reason: "SIGNATURE_INVALID" });
}

function errnoCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}
