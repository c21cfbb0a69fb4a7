/**
 * DDIM (eta = 0) as diffusers' DDIMScheduler computes it, plus the inversion's level pairing.
 *
 * The same update moves a latent down (sampling) or up (inversion) the noise levels; only the pair of
 * cumulative alphas changes. Cumulative alphas are kept in float32 like diffusers, the step itself runs
 * in float64 per element and is stored as float32.
 */

export type PredictionType = "epsilon" | "v_prediction";

export interface SchedulerConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: "scaled_linear" | "linear" | "squaredcos_cap_v2";
  trained_betas?: number[] | null;
  set_alpha_to_one: boolean;
  steps_offset: number;
  prediction_type: PredictionType;
  timestep_spacing?: "leading" | "trailing" | "linspace";
  clip_sample?: boolean;
}

/** How the inversion picks the UNet's timestep for the step from level t to the next, noisier one. */
export type InversionPairing = "consistent" | "notebook";

export class DdimScheduler {
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;
  /** Inference timesteps, highest first (diffusers' `scheduler.timesteps`). */
  readonly timesteps: number[];
  /** num_train_timesteps / steps: the distance between consecutive timesteps. */
  readonly stepRatio: number;

  constructor(
    readonly config: SchedulerConfig,
    readonly steps: number,
  ) {
    if (!Number.isInteger(steps) || steps < 1 || steps > config.num_train_timesteps) {
      throw new Error(`steps must be an integer in 1..${config.num_train_timesteps}, got ${steps}`);
    }
    if (config.clip_sample) throw new Error("scheduler config has clip_sample=true, which inversion cannot undo");
    this.alphasCumprod = cumulativeAlphas(config);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.stepRatio = Math.floor(config.num_train_timesteps / steps);
    this.timesteps = inferenceTimesteps(config, steps);
  }

  get predictionType(): PredictionType {
    return this.config.prediction_type;
  }

  /** Cumulative alpha at a timestep; negative means the clean end (final alpha). */
  alpha(t: number): number {
    return t >= 0 ? this.alphasCumprod[t] : this.finalAlphaCumprod;
  }

  /** The level a sampling step at timestep t lands on. */
  previousTimestep(t: number): number {
    return t - this.stepRatio;
  }

  /**
   * The inversion's steps, from the clean latent upwards: for step i, the level it starts from, the level
   * it reaches, and the timestep the UNet is evaluated at. "consistent" evaluates the UNet at the level of
   * the latent it is given; "notebook" reproduces the reference notebook's off-by-one (issues #64/#79),
   * which uses the next level's timestep.
   */
  inversionSteps(pairing: InversionPairing = "consistent"): { from: number; to: number; unetTimestep: number }[] {
    const levels = [-1, ...[...this.timesteps].reverse()];
    const out = [];
    for (let i = 0; i < this.steps; i++) {
      const from = levels[i];
      const to = levels[i + 1];
      out.push({ from, to, unetTimestep: pairing === "consistent" ? Math.max(from, 0) : to });
    }
    return out;
  }
}

function cumulativeAlphas(config: SchedulerConfig): Float32Array {
  const n = config.num_train_timesteps;
  let betas: Float64Array;
  if (config.trained_betas && config.trained_betas.length) {
    betas = Float64Array.from(config.trained_betas);
  } else if (config.beta_schedule === "scaled_linear") {
    const a = Math.sqrt(config.beta_start);
    const b = Math.sqrt(config.beta_end);
    betas = linspaceFloat32(a, b, n).map((x) => x * x);
  } else if (config.beta_schedule === "linear") {
    betas = linspaceFloat32(config.beta_start, config.beta_end, n);
  } else if (config.beta_schedule === "squaredcos_cap_v2") {
    const f = (t: number) => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
    betas = new Float64Array(n).map((_, i) => Math.min(1 - f((i + 1) / n) / f(i / n), 0.999));
  } else {
    throw new Error(`unsupported beta_schedule ${JSON.stringify(config.beta_schedule)}`);
  }
  // As torch does it: betas and alphas are float32 tensors, and cumprod accumulates them in double
  // (a float32 running product drifts ~1e-6 relative by t = 999).
  const out = new Float32Array(n);
  let product = 1;
  for (let i = 0; i < n; i++) {
    product *= Math.fround(1 - Math.fround(betas[i]));
    out[i] = product;
  }
  return out;
}

function linspace(start: number, end: number, n: number): Float64Array {
  const out = new Float64Array(n);
  const step = n > 1 ? (end - start) / (n - 1) : 0;
  for (let i = 0; i < n; i++) out[i] = start + step * i;
  return out;
}

/** torch.linspace in float32: from the start for the first half, from the end for the second. */
function linspaceFloat32(start: number, end: number, n: number): Float64Array {
  const f = Math.fround;
  const out = new Float64Array(n);
  const step = n > 1 ? f((f(end) - f(start)) / (n - 1)) : 0;
  const half = Math.floor(n / 2);
  for (let i = 0; i < n; i++) out[i] = i < half ? f(f(start) + f(step * i)) : f(f(end) - f(step * (n - 1 - i)));
  return out;
}

function inferenceTimesteps(config: SchedulerConfig, steps: number): number[] {
  const n = config.num_train_timesteps;
  const spacing = config.timestep_spacing ?? "leading";
  let ts: number[];
  if (spacing === "leading") {
    const ratio = Math.floor(n / steps);
    ts = Array.from({ length: steps }, (_, i) => Math.round(i * ratio) + config.steps_offset);
  } else if (spacing === "trailing") {
    const ratio = n / steps;
    ts = Array.from({ length: steps }, (_, i) => Math.round(n - i * ratio) - 1).reverse();
  } else if (spacing === "linspace") {
    ts = Array.from(linspace(0, n - 1, steps), (x) => Math.round(x));
  } else {
    throw new Error(`unsupported timestep_spacing ${JSON.stringify(spacing)}`);
  }
  return ts.reverse();
}

/**
 * One deterministic DDIM move of `latent` from cumulative alpha `alphaFrom` to `alphaTo`, given the model
 * output at that latent. Writes into `out` (which may alias `latent`).
 */
export function ddimStep(
  modelOutput: Float32Array,
  latent: Float32Array,
  alphaFrom: number,
  alphaTo: number,
  predictionType: PredictionType,
  out: Float32Array = new Float32Array(latent.length),
): Float32Array {
  // diffusers keeps the alphas as float32 tensors: round them the same way before the square roots.
  const a = Math.fround(alphaFrom);
  const b = Math.fround(alphaTo);
  const sqrtA = Math.fround(Math.sqrt(a));
  const sqrt1mA = Math.fround(Math.sqrt(Math.fround(1 - a)));
  const sqrtB = Math.fround(Math.sqrt(b));
  const sqrt1mB = Math.fround(Math.sqrt(Math.fround(1 - b)));
  const v = predictionType === "v_prediction";
  if (!v && predictionType !== "epsilon") throw new Error(`unsupported prediction type ${predictionType}`);
  for (let i = 0; i < latent.length; i++) {
    const x = latent[i];
    const m = modelOutput[i];
    const x0 = v ? sqrtA * x - sqrt1mA * m : (x - sqrt1mA * m) / sqrtA;
    const eps = v ? sqrtA * m + sqrt1mA * x : m;
    out[i] = sqrtB * x0 + sqrt1mB * eps;
  }
  return out;
}

/** Classifier-free guidance u + w (c - u), into `out`. */
export function guide(uncond: Float32Array, cond: Float32Array, guidance: number, out = new Float32Array(uncond.length)) {
  for (let i = 0; i < uncond.length; i++) out[i] = uncond[i] + guidance * (cond[i] - uncond[i]);
  return out;
}
