/**
 * Keyless (Sigstore) verification of release.json: checks a Sigstore bundle
 * (release.json.sigstore.json) fully offline against a pinned trusted root (the Fulcio CAs, CT logs,
 * Rekor logs and timestamp authorities to trust) and the signer policy of the updater's
 * configuration: the OIDC issuer, compared exactly, and a regular expression that must match the
 * whole certificate identity. Also owns loading trusted_root.json, the shipped public-good one by
 * default.
 *
 * Only message-signature bundles are accepted: a DSSE (attestation) bundle signs its own payload, not
 * release.json, so it could never vouch for the file.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Bundle, bundleFromJSON, ValidationError } from "@sigstore/bundle";
import type { RFC3161Timestamp, X509Certificate } from "@sigstore/core";
import { HashAlgorithm, TrustedRoot } from "@sigstore/protobuf-specs";
import {
  PolicyError,
  type SignedEntity,
  type Signer,
  toSignedEntity,
  toTrustMaterial,
  VerificationError,
  type VerificationPolicy,
  Verifier,
} from "@sigstore/verify";
import { UpdaterError } from "../errors.js";
import type { Verification } from "../orchestrator/job.js";
import type { ReleaseVerifier } from "../orchestrator/ports.js";

/** Where the shipped public-good trusted root lives, relative to the checkout (or install) root. */
export const SHIPPED_TRUSTED_ROOT = join("assets", "sigstore", "trusted_root.public-good.json");

/** The signer policy and the trust material of a {@link KeylessVerifier}. */
export interface KeylessVerifierOptions {
  /** A parsed trusted_root.json, as {@link loadTrustedRoot} returns it. */
  trustedRoot: unknown;
  /** The OIDC issuer the certificate must name, compared exactly. */
  issuer: string;
  /**
   * A regular expression source that must match the WHOLE certificate identity (SAN). It is
   * anchored here as `^(?:identity)$`, so `acme/widget` never matches `notacme/widget`.
   */
  identity: string;
}

const OID_FULCIO_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1";
const OID_FULCIO_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8";
const TRUSTED_ROOT_MEDIA_TYPE =
  /^application\/vnd\.dev\.sigstore\.trustedroot(\+json;version=0\.\d+|\.v0\.\d+\+json)$/;
const REFUSED = "release.json signature refused";

/**
 * Verifies release.json against a Sigstore bundle, offline. A valid signature needs: a certificate
 * chaining to a CA of the trusted root with an SCT from a trusted CT log; a transparency log
 * (Rekor) entry with a valid inclusion promise or proof; a signing time (the Rekor v1 integrated
 * time or an RFC 3161 timestamp from a trusted TSA) inside the certificate's validity; a signature
 * over exactly these bytes; and a certificate issuer and identity that satisfy the policy.
 *
 * Refusals are UpdaterErrors (`failed_precondition`) with a reason: SIGNATURE_INVALID (the bytes or
 * the signature do not match), SIGNER_UNTRUSTED (another identity or issuer), CERTIFICATE_UNTRUSTED
 * (untrusted CA, invalid at signing time, no trusted log entry or timestamp), BUNDLE_INVALID
 * (not a usable message-signature bundle).
 */
export class KeylessVerifier implements ReleaseVerifier {
  readonly signatureAsset = "release.json.sigstore.json";
  readonly #verifier: Verifier;
  readonly #issuer: string;
  readonly #identity: RegExp;
  readonly #identityPattern: string;
  readonly #policy: VerificationPolicy;

  /**
   * Throws an UpdaterError: `invalid_argument` (reason SIGNER_POLICY_INVALID) for an empty issuer or
   * an identity that is not a regular expression on its own; `failed_precondition` (reason
   * TRUSTED_ROOT_INVALID) for trust material that cannot be used.
   */
  constructor(options: KeylessVerifierOptions) {
    if (options.issuer.trim() === "") throw policyInvalid("the signer issuer must not be empty");
    if (options.identity.trim() === "") throw policyInvalid("the signer identity must not be empty");
    try {
      // Compiled alone first: a source such as `a)|(b` would otherwise escape the anchoring group.
      new RegExp(options.identity);
      this.#identityPattern = `^(?:${options.identity})$`;
      this.#identity = new RegExp(this.#identityPattern);
    } catch (err) {
      throw policyInvalid(
        `the signer identity ${JSON.stringify(options.identity)} is not a valid regular expression: ${(err as Error).message}`,
        err,
      );
    }
    this.#issuer = options.issuer;
    this.#policy = { subjectAlternativeName: this.#identity, extensions: { issuer: this.#issuer } };
    const root = checkTrustedRoot(options.trustedRoot, "the trusted root");
    try {
      const trust = toTrustMaterial(TrustedRoot.fromJSON(root));
      this.#verifier = new Verifier(trust, { ctlogThreshold: 1, tlogThreshold: 1, timestampThreshold: 1 });
    } catch (err) {
      throw rootInvalid(`the trusted root cannot be used: ${(err as Error).message}`, err);
    }
  }

  /** Resolves with what was verified, or rejects with an UpdaterError that says why not. */
  async verify(manifest: Uint8Array, signature: Uint8Array): Promise<Verification> {
    const manifestSha256 = createHash("sha256").update(manifest).digest("hex");
    const bundle = parseBundle(signature);
    if (bundle.content.$case !== "messageSignature") {
      throw refused(
        "BUNDLE_INVALID",
        "the bundle holds a DSSE envelope (an attestation), which signs its own payload and not release.json; expected a message-signature bundle (cosign sign-blob --bundle)",
      );
    }
    if (bundle.verificationMaterial.content.$case === "publicKey") {
      throw refused(
        "BUNDLE_INVALID",
        "the bundle names a public key, not a Fulcio certificate; the keyless policy needs a certificate",
      );
    }
    const digest = bundle.content.messageSignature.messageDigest;
    if (digest.algorithm === HashAlgorithm.SHA2_256) {
      const signedSha256 = Buffer.from(digest.digest).toString("hex");
      if (signedSha256 !== manifestSha256) {
        throw refused(
          "SIGNATURE_INVALID",
          `the bundle signs a file with sha256 ${signedSha256}, but release.json has sha256 ${manifestSha256}: the file was changed after signing, or the bundle belongs to another file`,
        );
      }
    }

    let entity: SignedEntity;
    try {
      entity = toSignedEntity(bundle, Buffer.from(manifest));
    } catch (err) {
      throw refused("BUNDLE_INVALID", `the bundle cannot be read: ${(err as Error).message}`, err);
    }
    let signer: Signer;
    try {
      signer = this.#verifier.verify(entity, this.#policy);
    } catch (err) {
      throw this.#explain(err, entity, manifestSha256);
    }

    const identity = signer.identity?.subjectAlternativeName;
    const issuer = signer.identity?.extensions?.issuer;
    if (
      identity === undefined ||
      issuer !== this.#issuer ||
      this.#identity.exec(identity)?.[0] !== identity
    ) {
      throw this.#untrustedSigner(identity, issuer);
    }
    return { policy: "keyless", identity, issuer, manifestSha256 };
  }

  #explain(err: unknown, entity: SignedEntity, manifestSha256: string): UpdaterError {
    if (err instanceof PolicyError) {
      const found = entity.key.$case === "certificate" ? certificateIdentity(entity.key.certificate) : {};
      return this.#untrustedSigner(found.identity, found.issuer, err);
    }
    if (!(err instanceof VerificationError)) {
      return refused("BUNDLE_INVALID", `the bundle cannot be checked: ${errorText(err)}`, err);
    }
    const detail = errorText(err);
    switch (err.code) {
      case "SIGNATURE_ERROR":
        return refused(
          "SIGNATURE_INVALID",
          `the signature does not verify over release.json (sha256 ${manifestSha256}): the file or the signature was changed`,
          err,
        );
      case "TLOG_BODY_ERROR":
        return refused(
          "SIGNATURE_INVALID",
          `the transparency log entry does not record this bundle's signature (${detail}): the bundle was altered`,
          err,
        );
      case "CERTIFICATE_ERROR":
        return refused("CERTIFICATE_UNTRUSTED", certificateProblem(err, entity), err);
      case "TIMESTAMP_ERROR":
        if (/^expected \d+ timestamps/.test(err.message)) {
          return refused(
            "CERTIFICATE_UNTRUSTED",
            "nothing proves when the bundle was signed (no transparency log entry with an inclusion promise and no RFC 3161 timestamp), so the short-lived signing certificate cannot be checked",
            err,
          );
        }
        if (!timestampsCoverSignature(entity)) {
          return refused(
            "SIGNATURE_INVALID",
            "the RFC 3161 timestamp was issued for another signature than this bundle's: the bundle was altered",
            err,
          );
        }
        return refused(
          "CERTIFICATE_UNTRUSTED",
          `the RFC 3161 timestamp is not from a timestamp authority of the trusted root (${detail})`,
          err,
        );
      case "TLOG_ERROR":
      case "TLOG_INCLUSION_PROOF_ERROR":
      case "TLOG_INCLUSION_PROMISE_ERROR":
      case "TLOG_MISSING_INCLUSION_ERROR":
        return refused(
          "CERTIFICATE_UNTRUSTED",
          /^expected \d+ tlog entries/.test(err.message)
            ? "the bundle has no transparency log (Rekor) entry; one is required"
            : `the transparency log entry is not proven by a Rekor log of the trusted root (${detail})`,
          err,
        );
      default:
        return refused("BUNDLE_INVALID", `the bundle cannot be checked: ${detail}`, err);
    }
  }

  #untrustedSigner(identity: string | undefined, issuer: string | undefined, cause?: unknown): UpdaterError {
    return refused(
      "SIGNER_UNTRUSTED",
      `signed by ${identity ?? "(no identity)"} (issuer ${issuer ?? "(none)"}), but the policy requires an identity matching ${this.#identityPattern} issued by ${this.#issuer}`,
      cause,
    );
  }
}

/**
 * Reads and sanity-checks a trusted_root.json: the file at `path`, or the shipped public-good root
 * (found next to this module, in src/ or dist/src/). Returns the parsed document for
 * {@link KeylessVerifierOptions.trustedRoot}. Throws an UpdaterError (`failed_precondition`,
 * reason TRUSTED_ROOT_INVALID) that names the file and the problem.
 */
export function loadTrustedRoot(path?: string): unknown {
  const file = path ?? join(findCheckoutRoot(), SHIPPED_TRUSTED_ROOT);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw rootInvalid(`cannot read the Sigstore trusted root ${file}: ${code}`, err);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw rootInvalid(`the Sigstore trusted root ${file} is not JSON: ${(err as Error).message}`, err);
  }
  return checkTrustedRoot(doc, `the Sigstore trusted root ${file}`);
}

function findCheckoutRoot(): string {
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "assets", "sigstore"))) return dir;
    if (dirname(dir) === dir) {
      throw rootInvalid(
        `cannot find the shipped ${SHIPPED_TRUSTED_ROOT} in ${start} or any parent directory`,
      );
    }
  }
}

function checkTrustedRoot(doc: unknown, what: string): Record<string, unknown> {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc))
    throw rootInvalid(`${what} must be a JSON object`);
  const root = doc as Record<string, unknown>;
  if (typeof root.mediaType !== "string" || !TRUSTED_ROOT_MEDIA_TYPE.test(root.mediaType)) {
    throw rootInvalid(
      `${what} has mediaType ${JSON.stringify(root.mediaType)}; expected application/vnd.dev.sigstore.trustedroot+json;version=0.1 (or a later 0.x)`,
    );
  }
  for (const field of ["certificateAuthorities", "ctlogs", "tlogs"]) {
    const list = root[field];
    if (!Array.isArray(list) || list.length === 0)
      throw rootInvalid(`${what} lists no ${field}; a keyless signature cannot be verified without one`);
  }
  return root;
}

function parseBundle(signature: Uint8Array): Bundle {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(signature));
  } catch (err) {
    throw refused("BUNDLE_INVALID", `the bundle is not UTF-8 JSON: ${(err as Error).message}`, err);
  }
  try {
    return bundleFromJSON(doc);
  } catch (err) {
    const fields = err instanceof ValidationError && err.fields ? ` (invalid: ${err.fields.join(", ")})` : "";
    throw refused("BUNDLE_INVALID", `the file is not a Sigstore bundle: ${errorText(err)}${fields}`, err);
  }
}

function certificateProblem(err: VerificationError, entity: SignedEntity): string {
  const detail = errorText(err);
  if (/SCT/.test(detail)) {
    return `the signing certificate has no valid SCT from a certificate transparency log of the trusted root (${detail})`;
  }
  if (/not valid or expired/.test(detail) && entity.key.$case === "certificate") {
    const cert = entity.key.certificate;
    return `the signing certificate (valid ${cert.notBefore.toISOString()} to ${cert.notAfter.toISOString()}) was not valid when the bundle was signed (${signingTimes(entity).join(", ") || "no signing time"})`;
  }
  if (/certificate path/.test(detail)) {
    return `the signing certificate was not issued by a certificate authority of the trusted root (${detail})`;
  }
  return `the signing certificate is not trusted (${detail})`;
}

function signingTimes(entity: SignedEntity): string[] {
  return entity.timestamps.flatMap((t) => {
    if (t.$case === "timestamp-authority") return [`timestamp ${tsaTime(t.timestamp)}`];
    if (t.tlogEntry.inclusionPromise === undefined) return [];
    return [`transparency log ${new Date(Number(t.tlogEntry.integratedTime) * 1000).toISOString()}`];
  });
}

function timestampsCoverSignature(entity: SignedEntity): boolean {
  return entity.timestamps.every((t) => {
    if (t.$case !== "timestamp-authority") return true;
    try {
      t.timestamp.tstInfo.verify(entity.signature.signature);
      return true;
    } catch {
      return false;
    }
  });
}

function tsaTime(timestamp: RFC3161Timestamp): string {
  try {
    return timestamp.signingTime.toISOString();
  } catch {
    return "(unreadable)";
  }
}

function certificateIdentity(cert: X509Certificate): { identity?: string; issuer?: string } {
  const v2 = cert.extension(OID_FULCIO_ISSUER_V2);
  const issuer = v2
    ? v2.valueObj.subs[0]?.value.toString("ascii")
    : cert.extension(OID_FULCIO_ISSUER_V1)?.value.toString("ascii");
  const identity = cert.subjectAltName;
  return { ...(identity === undefined ? {} : { identity }), ...(issuer === undefined ? {} : { issuer }) };
}

/** The library's message with its cause's, which often says what exactly failed. */
function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
  return `${err.message}${cause}`;
}

function refused(reason: string, detail: string, cause?: unknown): UpdaterError {
  return new UpdaterError("failed_precondition", `${REFUSED}: ${detail}`, { reason, cause });
}

function policyInvalid(message: string, cause?: unknown): UpdaterError {
  return new UpdaterError("invalid_argument", message, { reason: "SIGNER_POLICY_INVALID", cause });
}

function rootInvalid(message: string, cause?: unknown): UpdaterError {
  return new UpdaterError("failed_precondition", message, { reason: "TRUSTED_ROOT_INVALID", cause });
}
