/**
 * The method's numerical steps over a Model's graphs (docs/design.md §1): prompt and image encoding, pivotal DDIM
 * inversion, null-text optimisation (Adam in TypeScript over the exported gradient graph), NPI and
 * Direct Inversion, and guided DDIM sampling. Every function takes a `Run` that counts UNet evaluations,
 * reports progress and honours an AbortSignal between graph calls.
 */
import { Adam } from "./adam";
import { f32, scalar, timestepFeed } from "./backend";
import type { StepRecord } from "./artifact";
import { rgbToModelInput } from "./image";
import type { Model } from "./model";
import { DdimScheduler, InversionPairing, ddimStep, guide } from "./scheduler";

/** "compare": the DDIM-only reconstruction made beside the method's own, for the PSNR comparison. */
export type Phase = "encode" | "invert" | "optimize" | "direct" | "reconstruct" | "compare" | "edit" | "decode";

export interface Progress {
  phase: Phase;
  /** Steps done in this phase, and its total. */
  step: number;
  total: number;
  timestep?: number;
  /** Null-text: the finished step's record. */
  record?: StepRecord;
}

export interface RunOptions {
  signal?: AbortSignal;
  onProgress?: (progress: Progress) => void;
}

/** One piece of work on a model: its scheduler, its UNet counts, its progress and cancellation. */
export class Run {
  unetForward = 0;
  unetBackward = 0;

  constructor(
    readonly model: Model,
    readonly scheduler: DdimScheduler,
    private readonly options: RunOptions = {},
  ) {}

  checkAborted(): void {
    this.options.signal?.throwIfAborted();
  }

  progress(p: Progress): void {
    this.options.onProgress?.(p);
  }
}

/**
 * How each null-text step's inner loop ends:
 * - "notebook": the paper's order. Every gradient is followed by an Adam step, the one that meets the
 *   early-stop threshold too, so one more UNet pass is needed to advance the latent with that last,
 *   never-evaluated embedding. Matches the PyTorch reference iteration for iteration.
 * - "lean": the loss is checked before the Adam step, and the loop ends on an evaluated embedding (the one
 *   under the threshold, or the last one allowed) without stepping past it. The gradient graph has already
 *   computed the latent that embedding gives, so no extra UNet pass is needed and no Adam step is wasted.
 */
export type { InnerLoop, NullInit } from "./settings";
import type { InnerLoop, NullInit } from "./settings";

export interface NullTextSettings {
  guidance: number;
  innerSteps: number;
  learningRate: number;
  earlyStop: number;
  earlyStopSlope: number;
  innerLoop: InnerLoop;
  nullInit: NullInit;
}

// ---- encoders -----------------------------------------------------------------------------------------

/** The conditioning of B prompts, stacked (for SD 1.x/2.x the text encoder's states [B, 77, D]): the model's family decides. */
export async function encodePrompts(run: Run, prompts: string[]): Promise<Float32Array> {
  return run.model.family.encode(run, prompts);
}

/** uint8 HWC image at model size -> scaled latent from the VAE encoder's mean. */
export async function encodeImage(run: Run, rgb: Uint8Array): Promise<Float32Array> {
  run.checkAborted();
  const m = run.model.manifest;
  const out = await run.model.withGraph("vae_encoder", (encoder) =>
    encoder.run({ image: f32(rgbToModelInput(rgb, m.image_size), [1, 3, m.image_size, m.image_size]) }),
  );
  const mean = out.latent_mean;
  const shift = m.vae_shift_factor ?? 0;
  const z = new Float32Array(mean.length);
  for (let i = 0; i < z.length; i++) z[i] = (mean[i] - shift) * m.vae_scaling_factor;
  return z;
}

/**
 * Scaled latents [B, C, h, w] -> float images [B, 3, H, W] in [-1, 1]. One image per decoder call: the
 * decoder's full-size activations are a job's largest tensors, and a batch would hold B sets of them at once.
 */
export async function decodeLatents(run: Run, latents: Float32Array, batch = 1): Promise<Float32Array> {
  const m = run.model.manifest;
  const shift = m.vae_shift_factor ?? 0;
  const [, c, h, w] = run.model.latentDims;
  const per = latents.length / batch;
  const images = await run.model.withGraph("vae_decoder", async (decoder) => {
    const out: Float32Array[] = [];
    for (let b = 0; b < batch; b++) {
      run.checkAborted();
      const unscaled = new Float32Array(per);
      for (let i = 0; i < per; i++) unscaled[i] = latents[b * per + i] / m.vae_scaling_factor + shift;
      out.push((await decoder.run({ latent: f32(unscaled, [1, c, h, w]) })).image);
    }
    return out;
  });
  if (images.length === 1) return images[0];
  const out = new Float32Array(images.reduce((a, x) => a + x.length, 0));
  images.forEach((x, b) => out.set(x, b * x.length));
  return out;
}

// ---- UNet -----------------------------------------------------------------------------------------------

/** UNet output for B latents with B embeddings at one timestep. */
async function unet(run: Run, latents: Float32Array, t: number, embeddings: Float32Array, batch: number): Promise<Float32Array> {
  run.checkAborted();
  const [, c, h, w] = run.model.latentDims;
  const m = run.model.manifest;
  const graph = await run.model.graph("unet");
  const out = await graph.run({
    sample: f32(latents, [batch, c, h, w]),
    timestep: timestepFeed(t),
    encoder_hidden_states: f32(embeddings, [batch, m.tokenizer.max_length, m.text_hidden_size]),
  });
  run.unetForward += batch;
  return out.out_sample;
}

/** Guided noise for one latent: a batch-2 call [uncond, cond], then u + w (c - u). */
/** The guided noise prediction (classifier-free guidance) at one latent: one batch-2 UNet call. */
export async function guidedNoise(run: Run, latent: Float32Array, t: number, nullEmbedding: Float32Array, cond: Float32Array, guidance: number) {
  const n = latent.length;
  const both = await unet(run, concat(latent, latent), t, concat(nullEmbedding, cond), 2);
  return guide(both.subarray(0, n), both.subarray(n), guidance);
}

// ---- inversion -----------------------------------------------------------------------------------------

/** Pivotal DDIM inversion with the prompt only (guidance 1): pivots z_0 .. z_T. */
export async function ddimInversion(run: Run, z0: Float32Array, cond: Float32Array, pairing: InversionPairing): Promise<Float32Array[]> {
  const s = run.scheduler;
  const steps = s.inversionSteps(pairing);
  const pivots = [z0];
  let z = z0;
  for (const [i, step] of steps.entries()) {
    const out = await unet(run, z, step.unetTimestep, cond, 1);
    z = ddimStep(out, z, s.alpha(step.from), s.alpha(step.to), s.predictionType);
    pivots.push(z);
    run.progress({ phase: "invert", step: i + 1, total: steps.length, timestep: step.to });
  }
  return pivots;
}

export interface NullTextStepResult {
  /** The optimised null embedding of this step. */
  nullEmbedding: Float32Array;
  /** The loss of each embedding evaluated (each gradient call). */
  losses: number[];
  threshold: number;
  /** The latent after this step, advanced with the final null embedding. */
  next: Float32Array;
}

/**
 * One null-text step i at timestep t (docs/design.md §1): the conditional noise once, then up to `innerSteps`
 * gradient calls (loss, d loss / d null embedding and the latent that embedding gives), with Adam steps
 * between them, until the loss is below 1e-5 + i * 2e-5. How the loop ends is `settings.innerLoop`.
 */
export async function nullTextStep(
  run: Run,
  i: number,
  latent: Float32Array,
  target: Float32Array,
  cond: Float32Array,
  startEmbedding: Float32Array,
  settings: NullTextSettings,
): Promise<NullTextStepResult> {
  const s = run.scheduler;
  const t = s.timesteps[i];
  const [, c, h, w] = run.model.latentDims;
  const m = run.model.manifest;
  const latentDims = [1, c, h, w];
  const condNoise = await unet(run, latent, t, cond, 1);
  const embedding = Float32Array.from(startEmbedding);
  const adam = new Adam(embedding, settings.learningRate * (1 - i / 100));
  const threshold = settings.earlyStop + i * settings.earlyStopSlope;
  const grad = await run.model.graph("null_text_grad");
  // Adam updates `embedding` in place, and the feed wraps that same buffer: nothing is copied per iteration.
  const feeds = {
    latent: f32(latent, latentDims),
    timestep: timestepFeed(t),
    null_embedding: f32(embedding, [1, m.tokenizer.max_length, m.text_hidden_size]),
    cond_noise: f32(condNoise, latentDims),
    target: f32(target, latentDims),
    guidance: scalar(settings.guidance),
    alpha_t: scalar(s.alpha(t)),
    alpha_prev: scalar(s.alpha(s.previousTimestep(t))),
  };
  const losses: number[] = [];
  for (let j = 0; j < settings.innerSteps; j++) {
    run.checkAborted();
    const out = await grad.run(feeds);
    run.unetForward += 1;
    run.unetBackward += 1;
    const loss = out.loss[0];
    losses.push(loss);
    if (settings.innerLoop === "lean" && (loss < threshold || j === settings.innerSteps - 1)) {
      // this embedding was evaluated: its gradient call has already advanced the latent
      return { nullEmbedding: embedding, losses, threshold, next: out.latent_prev };
    }
    adam.step(out.grad);
    if (loss < threshold) break;
  }
  const uncondNoise = await unet(run, latent, t, embedding, 1);
  const next = ddimStep(guide(uncondNoise, condNoise, settings.guidance), latent, s.alpha(t), s.alpha(s.previousTimestep(t)), s.predictionType);
  return { nullEmbedding: embedding, losses, threshold, next };
}

/**
 * Null-text optimisation over all steps, from z_T down, warm-starting each step from the previous one.
 * The latent it ends on is the reconstruction: sampling again with the same embeddings would retrace it.
 */
export async function nullTextOptimization(
  run: Run,
  pivots: Float32Array[],
  cond: Float32Array,
  uncond: Float32Array,
  settings: NullTextSettings,
): Promise<{ nullEmbeddings: Float32Array[]; records: StepRecord[]; reconstruction: Float32Array }> {
  const s = run.scheduler;
  const total = s.timesteps.length;
  const nullEmbeddings: Float32Array[] = [];
  const records: StepRecord[] = [];
  let latent = pivots[pivots.length - 1];
  let embedding = settings.nullInit === "prompt" ? cond : uncond;
  for (let i = 0; i < total; i++) {
    const step = await nullTextStep(run, i, latent, pivots[pivots.length - 2 - i], cond, embedding, settings);
    nullEmbeddings.push(step.nullEmbedding);
    const record = { timestep: s.timesteps[i], losses: step.losses, threshold: step.threshold };
    records.push(record);
    latent = step.next;
    embedding = step.nullEmbedding;
    run.progress({ phase: "optimize", step: i + 1, total, timestep: s.timesteps[i], record });
  }
  return { nullEmbeddings, records, reconstruction: latent };
}

/** Direct Inversion (Ju et al.): per step, the pivot minus the guided step taken from the previous pivot. */
export async function directOffsets(run: Run, pivots: Float32Array[], cond: Float32Array, uncond: Float32Array, guidance: number): Promise<Float32Array[]> {
  const s = run.scheduler;
  const total = s.timesteps.length;
  const offsets: Float32Array[] = [];
  for (let i = 0; i < total; i++) {
    const t = s.timesteps[i];
    const latent = pivots[pivots.length - 1 - i];
    const noise = await guidedNoise(run, latent, t, uncond, cond, guidance);
    const rec = ddimStep(noise, latent, s.alpha(t), s.alpha(s.previousTimestep(t)), s.predictionType);
    const target = pivots[pivots.length - 2 - i];
    offsets.push(target.map((v, k) => v - rec[k]));
    run.progress({ phase: "direct", step: i + 1, total, timestep: t });
  }
  return offsets;
}

// ---- sampling ------------------------------------------------------------------------------------------

/** One guided DDIM sampling step i from `latent`, with the null embedding of that step. */
export async function sampleStep(
  run: Run,
  i: number,
  latent: Float32Array,
  cond: Float32Array,
  nullEmbedding: Float32Array,
  guidance: number,
  offset?: Float32Array,
) {
  const s = run.scheduler;
  const t = s.timesteps[i];
  const noise = await guidedNoise(run, latent, t, nullEmbedding, cond, guidance);
  const next = ddimStep(noise, latent, s.alpha(t), s.alpha(s.previousTimestep(t)), s.predictionType);
  if (offset) for (let k = 0; k < next.length; k++) next[k] += offset[k];
  return next;
}

/**
 * Guided DDIM from z_T with a null embedding per step (`nullAt(i)`), adding Direct Inversion's offsets
 * when given. Returns the final latent.
 */
export async function sample(
  run: Run,
  zT: Float32Array,
  cond: Float32Array,
  nullAt: (i: number) => Float32Array,
  guidance: number,
  offsets?: Float32Array[],
  phase: Phase = "reconstruct",
): Promise<Float32Array> {
  const s = run.scheduler;
  const total = s.timesteps.length;
  let latent = zT;
  for (let i = 0; i < total; i++) {
    latent = await sampleStep(run, i, latent, cond, nullAt(i), guidance, offsets?.[i]);
    run.progress({ phase, step: i + 1, total, timestep: s.timesteps[i] });
  }
  return latent;
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Row i of a [n, ...] stack of equal rows (row 0 when there is one row for all steps). */
export function rowAt(stack: Float32Array, rowLength: number, i: number): Float32Array {
  const rows = stack.length / rowLength;
  const r = rows === 1 ? 0 : i;
  return stack.subarray(r * rowLength, (r + 1) * rowLength);
}
