/** An InversionArtifact built from the reference's fixtures (its z_T and null embeddings), for edit tests. */
import type { InversionArtifact } from "../../../src/core/artifact";
import type { Model } from "../../../src/core/model";
import { tinyFixtures } from "./fixtures";

export function fixtureArtifact(model: Model): InversionArtifact {
  const fx = tinyFixtures();
  const S = fx.meta.settings.steps;
  const m = model.manifest;
  return {
    header: {
      format: "nti-inversion",
      version: 1,
      created: "2026-11-26T00:00:00.000Z",
      prompt: fx.meta.prompt,
      settings: {
        method: "nulltext",
        steps: S,
        guidance: fx.meta.settings.guidance,
        innerSteps: 10,
        learningRate: 0.01,
        earlyStop: 1e-5,
        earlyStopSlope: 2e-5,
        pairing: "consistent",
        innerLoop: "notebook",
        nullInit: "empty",
      },
      model: { id: model.id, manifestSha256: model.manifestSha256, dir: model.dir },
      source: { path: "fixture", sha256: "0".repeat(64), width: 64, height: 64 },
      steps: fx.meta.losses.map((losses, i) => ({ timestep: 0, losses, threshold: 1e-5 + i * 2e-5 })),
      stats: { unetForward: 0, unetBackward: 0, seconds: 0, psnr: null, ddimPsnr: null },
      notes: [],
    },
    zT: fx.row("pivots", S),
    nullEmbeddings: fx.f32("null_embeddings"),
    directOffsets: null,
    source: fx.tensors.image.data as Uint8Array,
    dims: { latent: model.latentDims, tokens: m.tokenizer.max_length, hidden: m.text_hidden_size, imageSize: m.image_size },
  };
}
