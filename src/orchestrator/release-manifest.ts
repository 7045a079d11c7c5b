/**
 * The shape of a verified, validated release manifest (release.json, schema_version 1).
 * Only src/verify/manifest.ts makes these, and only from bytes whose signature verified.
 */

export interface ReleaseManifest {
  name: string;
  version: string;
  tag: string;
  image: {
    registry: string;
    repository: string;
    tag: string;
    digest: string;
    platforms: string[];
  };
  migration: {
    required: boolean;
    command: string[];
    downtime: boolean;
    estimatedDowntimeSeconds: number;
  };
  minUpgradeFrom?: string;
  prerelease: boolean;
  breakingChanges: string[];
  releaseNotes: string;
}
