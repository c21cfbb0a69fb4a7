/**
 * EDICT (Wallace, Gokul, Naik, "EDICT: Exact Diffusion Inversion via Coupled Transformations", CVPR 2023):
 * two coupled latents x and y, each DDIM update driven by the other's noise and the pair mixed with
 * weight p, so every generation step can be undone exactly: no pivots, no optimisation. The artifact
 * stores x_T (as z_T) and y_T; reconstruction and edits run the coupled generation (an edit is the
 * generation with the edited prompt, as in the paper; Prompt-to-Prompt's attention control does not apply).
 * Epsilon-prediction models only.
 */
import { guidedNoise, type Run } from "../inversion";
import type { Method } from "./types";

/** The paper's mixing weight. */
const EDICT_MIX = 0.93;

/** x_prev = a x + b eps: the DDIM step from t to the previous level, as a linear map of x and the noise. */
function coefficients(run: Run, t: number): [number, number] {
  const s = run.scheduler;
  const alphaT = Math.fround(s.alpha(t));
  const alphaPrev = Math.fround(s.alpha(s.previousTimestep(t)));
  return [Math.fround(Math.sqrt(alphaPrev / alphaT)), Math.fround(Math.sqrt(1 - alphaPrev) - Math.sqrt((alphaPrev * (1 - alphaT)) / alphaT))];
}

/** a x + b y, element-wise. */
function mix(a: number, x: Float32Array, b: number, y: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = a * x[i] + b * y[i];
  return out;
}

function checkPrediction(run: Run): void {
  if (run.scheduler.predictionType !== "epsilon") throw new Error("EDICT needs an epsilon-prediction model; this one predicts v: choose another method");
}

/** The coupled generation from (x_T, y_T) with one prompt; x_0. */
async function generate(
  run: Run,
  xT: Float32Array,
  yT: Float32Array,
  cond: Float32Array,
  uncond: Float32Array,
  guidance: number,
  p = EDICT_MIX,
): Promise<Float32Array> {
  const timesteps = run.scheduler.timesteps;
  let x = xT;
  let y = yT;
  for (const [i, t] of timesteps.entries()) {
    const [a, b] = coefficients(run, t);
    const xInter = mix(a, x, b, await guidedNoise(run, y, t, uncond, cond, guidance));
    const yInter = mix(a, y, b, await guidedNoise(run, xInter, t, uncond, cond, guidance));
    x = mix(p, xInter, 1 - p, yInter);
    y = mix(p, yInter, 1 - p, x);
    run.progress({ phase: "reconstruct", step: i + 1, total: timesteps.length, timestep: t });
  }
  return x;
}

export const edict: Method = {
  async invert({ run, pivots, cond, uncond, settings }) {
    checkPrediction(run);
    const p = EDICT_MIX;
    const timesteps = [...run.scheduler.timesteps].reverse(); // lowest first: each generation step undone
    let x = pivots[0];
    let y = pivots[0];
    for (const [i, t] of timesteps.entries()) {
      const [a, b] = coefficients(run, t);
      const yInter = mix(1 / p, y, -(1 - p) / p, x);
      const xInter = mix(1 / p, x, -(1 - p) / p, yInter);
      y = mix(1 / a, yInter, -b / a, await guidedNoise(run, xInter, t, uncond, cond, settings.guidance));
      x = mix(1 / a, xInter, -b / a, await guidedNoise(run, y, t, uncond, cond, settings.guidance));
      run.progress({ phase: "invert", step: i + 1, total: timesteps.length, timestep: t });
    }
    const reconstruction = await generate(run, x, y, cond, uncond, settings.guidance);
    return { nullEmbeddings: [uncond], records: [], zT: x, coupledLatent: y, reconstruction };
  },

  async sample({ run, zT, coupledLatent, conds, uncond, guidance }) {
    checkPrediction(run);
    if (!coupledLatent) throw new Error("an EDICT artifact needs its coupled latent y_T");
    const n = uncond.length;
    const latents: Float32Array[] = [];
    for (let k = 0; k < conds.length / n; k++) latents.push(await generate(run, zT, coupledLatent, conds.subarray(k * n, (k + 1) * n), uncond, guidance));
    return latents;
  },
};
