/**
 * The verifier used when no signer policy is configured: it refuses every release (fail closed),
 * so that nothing in an unverified release.json is ever used.
 */
import { UpdaterError } from "../errors.js";
import type { Verification } from "../orchestrator/job.js";
import type { ReleaseVerifier } from "../orchestrator/ports.js";

export class UnconfiguredVerifier implements ReleaseVerifier {
  readonly signatureAsset = "release.json.sigstore.json";

  verify(_manifest: Uint8Array, _signature: Uint8Array): Promise<Verification> {
    return Promise.reject(
      new UpdaterError(
        "failed_precondition",
        "no signer policy is configured in this build, so release.json cannot be trusted; the update is refused (fail closed)",
        { reason: "SIGNER_POLICY_MISSING" },
      ),
    );
  }
}
