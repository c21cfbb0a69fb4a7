/** The reference's parity fixtures (exporter/fixtures.py) and small comparison helpers for the tests. */
import { appendFileSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { decodeSafetensors, StoredTensor } from "../../../src/core/safetensors";

export const ROOT = path.resolve(__dirname, "../../..");
export const TINY_DIR = path.join(ROOT, "test/fixtures/tiny");
export const TINY_MODEL = path.join(TINY_DIR, "model");
export const SHAPES_MODEL = path.join(ROOT, "models/shapes-tiny");
/** SD 2.x's block features (v-prediction, linear projections, upcast attention) at tiny size. */
export const SD21_TINY_DIR = path.join(ROOT, "test/fixtures/sd21-tiny");

export interface TinyFixtures {
  meta: {
    settings: {
      steps: number;
      guidance: number;
      inner_steps: number;
      lr: number;
      early_stop: number;
      early_stop_slope: number;
      pairing: "consistent" | "notebook";
    };
    prompt: string;
    losses: number[][];
    unet_forward: number;
    unet_backward: number;
    edits: Record<string, unknown>;
    /** exporter/fixtures.py TOLERANCES: single calls tight, whole trajectories from measured rounding growth. */
    tolerances: { single_step_latent_rel: number; single_step_null_embedding_abs: number; inversion_latent_rel: number; trajectory_latent_rel: number };
  };
  tensors: Record<string, StoredTensor>;
  f32(name: string): Float32Array;
  /** Row i of a stacked tensor. */
  row(name: string, i: number): Float32Array;
}

const cached = new Map<string, TinyFixtures>();

export function tinyFixtures(dir = TINY_DIR): TinyFixtures {
  const known = cached.get(dir);
  if (known) return known;
  const meta = JSON.parse(readFileSync(path.join(dir, "fixtures.json"), "utf8"));
  const file = readFileSync(path.join(dir, "fixtures.safetensors"));
  const { tensors } = decodeSafetensors(new Uint8Array(file.buffer, file.byteOffset, file.length));
  const f32 = (name: string) => {
    const t = tensors[name];
    if (!t || t.dtype !== "F32") throw new Error(`fixture ${name} missing or not F32`);
    return t.data as Float32Array;
  };
  const row = (name: string, i: number) => {
    const t = tensors[name];
    const n = t.shape.slice(1).reduce((a, b) => a * b, 1);
    return f32(name).subarray(i * n, (i + 1) * n);
  };
  const fixtures = { meta, tensors, f32, row };
  cached.set(dir, fixtures);
  return fixtures;
}

/** The null-text settings the fixtures were written with (the paper's notebook loop from the empty prompt). */
export function nullTextSettings(fx: TinyFixtures) {
  const s = fx.meta.settings;
  return {
    guidance: s.guidance,
    innerSteps: s.inner_steps,
    learningRate: s.lr,
    earlyStop: s.early_stop,
    earlyStopSlope: s.early_stop_slope,
    innerLoop: "notebook" as const,
    nullInit: "empty" as const,
  };
}

/** max |a - b| / max |b|: the relative error the fixtures' tolerances are stated in. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / (scale || 1);
}

export function maxAbsError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]));
  return diff;
}

/**
 * ONNX Runtime settings of the parity tests, to run the same bounds under other kernels (docs/tolerances.md):
 * `NTI_TEST_THREADS=1` (intra-op threads; 0 or unset: the runtime's choice) and `NTI_TEST_GRAPH_OPT=basic`
 * (no fusions; default "all", as the engine runs).
 */
export const PARITY_RUNTIME = {
  threads: Number(process.env.NTI_TEST_THREADS ?? 0),
  graphOptimization: process.env.NTI_TEST_GRAPH_OPT === "basic" ? ("basic" as const) : ("all" as const),
};

const drifts: { what: string; deviation: number; bound: number }[] = [];

/**
 * Checks a whole-trajectory deviation from the fixtures against its bound and records it. Each test file
 * reports its largest at the end; with NTI_DRIFT_FILE set (scripts/test.sh) the records go there, so the
 * whole run prints one line.
 */
export function checkTrajectory(what: string, deviation: number, bound: number): void {
  drifts.push({ what, deviation, bound });
  if (process.env.NTI_DRIFT_FILE) appendFileSync(process.env.NTI_DRIFT_FILE, JSON.stringify({ what, deviation, bound }) + "\n");
  if (!(deviation < bound)) throw new Error(`${what}: ${deviation.toExponential(2)} off the reference (bound ${bound})`);
}

/** "[drift] ..." for the largest recorded deviation relative to its bound, or null when none was recorded. */
export function driftLine(records = drifts): string | null {
  if (records.length === 0) return null;
  const worst = records.reduce((a, b) => (b.deviation / b.bound > a.deviation / a.bound ? b : a));
  const headroom = worst.bound / Math.max(worst.deviation, 1e-30);
  return `[drift] largest whole-trajectory deviation from the reference: ${worst.deviation.toExponential(2)} (${worst.what}; bound ${worst.bound}, ${headroom.toFixed(0)}x headroom)`;
}
