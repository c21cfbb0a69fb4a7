/**
 * The interface every inversion method implements (docs/design.md §1). A method gets the pivots of DDIM
 * inversion and the prompt's and the empty prompt's embeddings, and returns what its artifact stores: the
 * null embeddings (one row, or one per step), Direct Inversion's offsets, the loss trace, and, where it
 * already has it, the reconstructed latent. Sampling, decoding, artifacts and editing are shared.
 * What the rest of the program knows about a method (label, graphs, what it stores) is its METHOD_INFO
 * entry in ../settings.ts, which the webview can import.
 */
import type { StepRecord } from "../artifact";
import type { Run } from "../inversion";
import type { InversionSettings } from "../settings";

interface MethodInput {
  run: Run;
  /** z*_0 .. z*_T of DDIM inversion with the prompt. */
  pivots: Float32Array[];
  /** The prompt's embedding [1, L, D] and the empty prompt's. */
  cond: Float32Array;
  uncond: Float32Array;
  settings: InversionSettings;
}

interface MethodOutput {
  /** One row for every step, or one per step (METHOD_INFO.perStepNullEmbeddings). */
  nullEmbeddings: Float32Array[];
  /** Per-step latent offsets (METHOD_INFO.directOffsets). */
  offsets?: Float32Array[];
  /** One record per step when the method has a loss trace (METHOD_INFO.lossTrace). */
  records: StepRecord[];
  /** z_0 when the method computed the reconstruction on the way (sampling again would retrace it). */
  reconstruction?: Float32Array;
  /** Its own z_T, where it is not the last pivot (EDICT's x_T). */
  zT?: Float32Array;
  /** A second latent the artifact stores (METHOD_INFO.coupledLatent: EDICT's y_T). */
  coupledLatent?: Float32Array;
}

/** What a method with its own sampler gets: the artifact's latents and each prompt's conditioning. */
interface SampleInput {
  run: Run;
  zT: Float32Array;
  coupledLatent: Float32Array | null;
  /** K prompts' conditioning, stacked. */
  conds: Float32Array;
  uncond: Float32Array;
  guidance: number;
}

export interface Method {
  invert(input: MethodInput): Promise<MethodOutput>;
  /** Its own generation from an artifact (one final latent per prompt); absent: guided DDIM with the stored null embeddings. */
  sample?(input: SampleInput): Promise<Float32Array[]>;
}
