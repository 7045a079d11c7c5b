/**
 * Real Sigstore bundles made offline, for tests and demos. `startMockSigstore()` runs the mock
 * Fulcio CA (plus a second, untrusted CA), CT log, Rekor and timestamp authority of @sigstore/mock
 * behind nock, blocks every other outbound request, and signs with `sigstore.sign` /
 * `sigstore.attest` exactly as a release workflow would, with an unsigned OIDC token whose claims
 * become the certificate identity. `trustedRoot` is the matching trusted_root.json document.
 *
 * Usage:
 *   const sigstore = await startMockSigstore();
 *   const bundle = await sigstore.sign(bytes, { identity: "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1.0.0" });
 *   new KeylessVerifier({ trustedRoot: sigstore.trustedRoot, issuer: GITHUB_ACTIONS_ISSUER, identity: "..." });
 *   sigstore.close();
 *
 * Only one mock may run at a time in a process (nock is process-wide). The mock services are
 * reachable only through nock: their hosts end in `.sigstore.mock`, which does not resolve.
 */
import { createHash, generateKeyPairSync, type KeyObject } from "node:crypto";
import { initializeCA } from "@sigstore/mock/dist/fulcio/ca.js";
import { initializeCTLog } from "@sigstore/mock/dist/fulcio/ctlog.js";
import { fulcioHandler } from "@sigstore/mock/dist/fulcio/handler.js";
import { rekorHandler } from "@sigstore/mock/dist/rekor/handler.js";
import { initializeTLog } from "@sigstore/mock/dist/rekor/tlog.js";
import { tsaHandler } from "@sigstore/mock/dist/timestamp/handler.js";
import { initializeTSA } from "@sigstore/mock/dist/timestamp/tsa.js";
import nock from "nock";
import { attest, sign } from "sigstore";

/** The OIDC issuer of GitHub Actions tokens. */
export const GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com";

/** The payload type of DSSE bundles made with `format: "dsse"`. */
export const DSSE_PAYLOAD_TYPE = "application/vnd.in-toto+json";

/** Where the mock services answer (through nock only). */
export const MOCK_SIGSTORE_URLS = {
  fulcio: "https://fulcio.sigstore.mock",
  untrustedFulcio: "https://fulcio-untrusted.sigstore.mock",
  ctlog: "https://ctfe.sigstore.mock",
  rekor: "https://rekor.sigstore.mock",
  tsa: "https://tsa.sigstore.mock",
} as const;

/** How one fixture bundle is made. Everything but `identity` defaults to a bundle that verifies. */
export interface FixtureSignOptions {
  /** The certificate identity (SAN URI): the token's `sub`. */
  identity: string;
  /** The OIDC issuer written into the certificate. Default {@link GITHUB_ACTIONS_ISSUER}. */
  issuer?: string;
  /**
   * "owner/name", written as the repository extensions. Default: taken from an identity of the form
   * `https://github.com/OWNER/NAME/...`.
   */
  repository?: string;
  /** More token claims (for example `repository_id`), turned into certificate extensions by the mock. */
  claims?: Record<string, string>;
  /** "untrusted": a certificate from a second CA that is not in `trustedRoot`. Default "trusted". */
  ca?: "trusted" | "untrusted";
  /**
   * "expired": issued an hour before the signing time (it lived 10 minutes); "not-yet-valid":
   * issued an hour after it. Default "valid": issued at the signing time.
   */
  certificate?: "valid" | "expired" | "not-yet-valid";
  /**
   * What proves the signing time: a Rekor entry and an RFC 3161 timestamp (default), one of them,
   * or nothing at all.
   */
  proof?: "tlog-and-timestamp" | "tlog" | "timestamp" | "none";
  /**
   * "dsse": an attestation bundle (`sigstore.attest`) whose payload is the bytes. Default message
   * signature. The mock Rekor logs DSSE entries as proposed, without the server's canonicalisation,
   * so a DSSE bundle with a Rekor entry does not verify anywhere: use it to test refusals only.
   */
  format?: "message-signature" | "dsse";
}

/** A running mock Sigstore. */
export interface MockSigstore {
  /** trusted_root.json (as parsed JSON) trusting the mock CA, CT log, Rekor and TSA; not the untrusted CA. */
  readonly trustedRoot: Record<string, unknown>;
  /** Signs `bytes` and returns the bundle JSON text (what release.json.sigstore.json holds). */
  sign(bytes: Uint8Array | string, options: FixtureSignOptions): Promise<string>;
  /** Removes every nock interceptor and nock's patches of http and fetch (outbound connections allowed again). */
  close(): void;
}

/** Options of {@link startMockSigstore}. */
export interface MockSigstoreOptions {
  /** Let requests to loopback addresses through (for tests that also run local servers). Default false. */
  allowLoopback?: boolean;
}

const LOOPBACK_HOST = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** Starts the mock services behind nock and returns the signer and its trusted root. */
export async function startMockSigstore(options: MockSigstoreOptions = {}): Promise<MockSigstore> {
  if (!nock.isActive()) nock.activate();
  nock.disableNetConnect();
  if (options.allowLoopback) nock.enableNetConnect((host) => LOOPBACK_HOST.test(host));

  // @sigstore/mock reads the Date it is given at every issuance: moving these moves its clocks.
  // They stay at whole seconds, because @sigstore/core rejects RFC 3161 times with 1 or 2
  // fractional digits.
  const certificateClock = new Date(wholeSecond(Date.now()));
  const signingClock = new Date(certificateClock.getTime());
  const startedAt = certificateClock.getTime();

  // Both CAs log to the trusted CT log, so a certificate of the untrusted CA fails on its chain alone.
  const ctlog = await initializeCTLog(ecKeyPair(), certificateClock);
  const ca = await initializeCA(ecKeyPair(), ctlog, certificateClock);
  const untrustedCA = await initializeCA(ecKeyPair(), ctlog, certificateClock);
  const tlog = await initializeTLog(MOCK_SIGSTORE_URLS.rekor, ecKeyPair(), signingClock);
  const tsa = await initializeTSA(ecKeyPair(), signingClock);

  const handlers = [
    { base: MOCK_SIGSTORE_URLS.fulcio, handler: fulcioHandler(ca) },
    { base: MOCK_SIGSTORE_URLS.untrustedFulcio, handler: fulcioHandler(untrustedCA) },
    { base: MOCK_SIGSTORE_URLS.rekor, handler: rekorHandler(tlog) },
    { base: MOCK_SIGSTORE_URLS.tsa, handler: tsaHandler(tsa) },
  ];
  for (const { base, handler } of handlers) {
    nock(base)
      .persist()
      .post(handler.path)
      .reply(async (request: Request) => {
        const result = await handler.fn(await request.text());
        return [result.statusCode, result.response, { "Content-Type": result.contentType ?? "text/plain" }];
      });
  }

  const validFrom = new Date(startedAt - DAY_MS).toISOString();
  const trustedRoot = {
    mediaType: "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    tlogs: [transparencyLog(MOCK_SIGSTORE_URLS.rekor, tlog.publicKey, validFrom)],
    certificateAuthorities: [
      certificateAuthority(MOCK_SIGSTORE_URLS.fulcio, "sigstore", [ca.rootCertificate], validFrom),
    ],
    ctlogs: [transparencyLog(MOCK_SIGSTORE_URLS.ctlog, ctlog.publicKey, validFrom)],
    timestampAuthorities: [
      certificateAuthority(
        MOCK_SIGSTORE_URLS.tsa,
        "tsa",
        [tsa.intCertificate, tsa.rootCertificate],
        validFrom,
      ),
    ],
  };

  let queue: Promise<unknown> = Promise.resolve();
  const signOne = async (bytes: Uint8Array | string, opts: FixtureSignOptions): Promise<string> => {
    const signedAt = wholeSecond(Math.max(Date.now(), startedAt));
    const shift = { valid: 0, expired: -HOUR_MS, "not-yet-valid": HOUR_MS }[opts.certificate ?? "valid"];
    certificateClock.setTime(signedAt + shift);
    signingClock.setTime(signedAt);

    const proof = opts.proof ?? "tlog-and-timestamp";
    const signOptions = {
      fulcioURL: opts.ca === "untrusted" ? MOCK_SIGSTORE_URLS.untrustedFulcio : MOCK_SIGSTORE_URLS.fulcio,
      rekorURL: MOCK_SIGSTORE_URLS.rekor,
      tlogUpload: proof === "tlog-and-timestamp" || proof === "tlog",
      ...(proof === "tlog-and-timestamp" || proof === "timestamp"
        ? { tsaServerURL: MOCK_SIGSTORE_URLS.tsa }
        : {}),
      identityToken: identityToken(opts),
      retry: 0,
    };
    const payload = Buffer.from(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
    const bundle =
      opts.format === "dsse"
        ? await attest(payload, DSSE_PAYLOAD_TYPE, signOptions)
        : await sign(payload, signOptions);
    return JSON.stringify(bundle);
  };

  return {
    trustedRoot,
    sign(bytes, opts) {
      const result = queue.then(() => signOne(bytes, opts));
      queue = result.catch(() => undefined);
      return result;
    },
    close() {
      nock.cleanAll();
      nock.enableNetConnect();
      // Unpatch http and fetch entirely: a test that goes on to real servers must not run through nock.
      nock.restore();
    },
  };
}

/** The claims of the unsigned token: Fulcio's mock copies `sub` into the SAN and the rest into extensions. */
function identityToken(opts: FixtureSignOptions): string {
  const repository = opts.repository ?? /^https:\/\/github\.com\/([^/]+\/[^/]+)\//.exec(opts.identity)?.[1];
  const ref = /@(refs\/.+)$/.exec(opts.identity)?.[1];
  const claims: Record<string, string> = {
    iss: opts.issuer ?? GITHUB_ACTIONS_ISSUER,
    sub: opts.identity,
    aud: "sigstore",
    ...(repository ? { repository, repository_owner: repository.split("/")[0] ?? repository } : {}),
    ...(ref ? { ref } : {}),
    ...opts.claims,
  };
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "none", typ: "JWT" })}.${part(claims)}.`;
}

function transparencyLog(baseUrl: string, spki: Buffer, validFrom: string) {
  return {
    baseUrl,
    hashAlgorithm: "SHA2_256",
    publicKey: {
      rawBytes: spki.toString("base64"),
      keyDetails: "PKIX_ECDSA_P256_SHA_256",
      validFor: { start: validFrom },
    },
    logId: { keyId: sha256Base64(spki) },
  };
}

function certificateAuthority(uri: string, commonName: string, chain: ArrayBufferView[], validFrom: string) {
  return {
    subject: { organization: "sigstore.mock", commonName },
    uri,
    certChain: {
      certificates: chain.map((der) => ({
        rawBytes: Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64"),
      })),
    },
    validFor: { start: validFrom },
  };
}

function sha256Base64(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("base64");
}

function ecKeyPair(): { publicKey: KeyObject; privateKey: KeyObject } {
  return generateKeyPairSync("ec", { namedCurve: "prime256v1" });
}

function wholeSecond(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}
