/**
 * The model folder's `nti.json` (docs/design.md §2): its types and a validator that names the first thing wrong.
 */
import { posix } from "node:path";
import type { PredictionType, SchedulerConfig } from "./scheduler";

export const MANIFEST_FORMAT = "nti-model";
export const MANIFEST_VERSION = 1;

export type GraphName = "text_encoder" | "vae_encoder" | "vae_decoder" | "unet" | "unet_control" | "null_text_grad";

export interface GraphIo {
  name: string;
  dtype: string;
  shape: (number | string)[];
}

export interface GraphEntry {
  file: string;
  external_data: string | null;
  precision: string;
  inputs: GraphIo[];
  outputs: GraphIo[];
}

export interface Manifest {
  format: string;
  format_version: number;
  name: string;
  source: string;
  licence: string;
  prediction_type: PredictionType;
  image_size: number;
  latent_channels: number;
  latent_factor: number;
  latent_size: number;
  vae_scaling_factor: number;
  vae_shift_factor: number | null;
  scheduler: SchedulerConfig;
  defaults: { inference_steps: number; guidance_scale: number; inner_steps: number };
  tokenizer: {
    file: string;
    max_length: number;
    bos_token_id: number;
    eos_token_id: number;
    pad_token_id: number;
    unk_token_id?: number | null;
  };
  text_hidden_size: number;
  attention: { map_resolution: number; map_layers: number; self_injection_layers: number; tokens: number };
  graphs: Partial<Record<GraphName, GraphEntry>>;
  files: Record<string, { sha256: string; bytes: number }>;
}

/** What the engine feeds each graph and reads back; a manifest must declare at least these. */
export const REQUIRED_IO: Record<GraphName, { inputs: string[]; outputs: string[] }> = {
  text_encoder: { inputs: ["input_ids"], outputs: ["last_hidden_state"] },
  vae_encoder: { inputs: ["image"], outputs: ["latent_mean"] },
  vae_decoder: { inputs: ["latent"], outputs: ["image"] },
  unet: { inputs: ["sample", "timestep", "encoder_hidden_states"], outputs: ["out_sample"] },
  unet_control: {
    inputs: ["sample", "timestep", "encoder_hidden_states", "mapper", "alphas", "reweight", "cross_flag", "self_flag"],
    outputs: ["noise_pred", "attention_maps"],
  },
  null_text_grad: {
    inputs: ["latent", "timestep", "null_embedding", "cond_noise", "target", "guidance", "alpha_t", "alpha_prev"],
    outputs: ["loss", "grad", "latent_prev", "uncond_noise"],
  },
};

/** Graphs every mode needs; the others are needed by null-text (gradient) and editing (control). */
export const CORE_GRAPHS: GraphName[] = ["text_encoder", "vae_encoder", "vae_decoder", "unet"];

export class ManifestError extends Error {
  override name = "ManifestError";
}

/** Checks the parsed nti.json; throws a ManifestError naming the field and what is wrong with it. */
export function validateManifest(value: unknown, where = "nti.json"): Manifest {
  const fail = (msg: string): never => {
    throw new ManifestError(`${where}: ${msg}`);
  };
  if (!isObject(value)) fail("is not a JSON object");
  const m = value as Record<string, unknown>;
  if (m.format !== MANIFEST_FORMAT) fail(`format is ${JSON.stringify(m.format)}, expected "${MANIFEST_FORMAT}"`);
  if (m.format_version !== MANIFEST_VERSION) {
    fail(`format_version ${JSON.stringify(m.format_version)} is not supported (this engine reads version ${MANIFEST_VERSION}); re-export the model or update the extension`);
  }
  const num = (obj: Record<string, unknown>, key: string, path: string, opts: { int?: boolean; min?: number; max?: number; above?: number } = {}) => {
    const v = obj[key];
    if (typeof v !== "number" || !Number.isFinite(v)) fail(`${path}${key} must be a number, got ${JSON.stringify(v)}`);
    if (opts.int && !Number.isInteger(v)) fail(`${path}${key} must be an integer, got ${v}`);
    if (opts.min !== undefined && (v as number) < opts.min) fail(`${path}${key} must be >= ${opts.min}, got ${v}`);
    if (opts.above !== undefined && (v as number) <= opts.above) fail(`${path}${key} must be > ${opts.above}, got ${v}`);
    if (opts.max !== undefined && (v as number) > opts.max) fail(`${path}${key} must be <= ${opts.max}, got ${v}`);
    return v as number;
  };
  const str = (obj: Record<string, unknown>, key: string, path: string) => {
    if (typeof obj[key] !== "string") fail(`${path}${key} must be a string, got ${JSON.stringify(obj[key])}`);
    return obj[key] as string;
  };
  const obj = (o: Record<string, unknown>, key: string, path: string) => {
    if (!isObject(o[key])) fail(`${path}${key} is missing or not an object`);
    return o[key] as Record<string, unknown>;
  };
  str(m, "name", "");
  if (m.prediction_type !== "epsilon" && m.prediction_type !== "v_prediction") {
    fail(`prediction_type ${JSON.stringify(m.prediction_type)} is not "epsilon" or "v_prediction"`);
  }
  // Ranges wide enough for any Stable-Diffusion-style model, narrow enough that a typo cannot ask for
  // gigabytes or divide by zero.
  num(m, "image_size", "", { int: true, min: 8, max: 4096 });
  num(m, "latent_channels", "", { int: true, min: 1, max: 64 });
  num(m, "latent_factor", "", { int: true, min: 1, max: 64 });
  num(m, "latent_size", "", { int: true, min: 1, max: 512 });
  num(m, "text_hidden_size", "", { int: true, min: 1, max: 16384 });
  if ((m.image_size as number) !== (m.latent_size as number) * (m.latent_factor as number)) {
    fail(`image_size ${m.image_size} is not latent_size ${m.latent_size} x latent_factor ${m.latent_factor}`);
  }
  num(m, "vae_scaling_factor", "", { above: 0, max: 1000 });
  if (m.vae_shift_factor !== null && m.vae_shift_factor !== undefined) num(m, "vae_shift_factor", "", { min: -1000, max: 1000 });
  const sched = obj(m, "scheduler", "");
  num(sched, "num_train_timesteps", "scheduler.", { int: true, min: 1, max: 100_000 });
  const betaStart = num(sched, "beta_start", "scheduler.", { above: 0, max: 1 });
  num(sched, "beta_end", "scheduler.", { min: betaStart, max: 1 });
  if (!["scaled_linear", "linear", "squaredcos_cap_v2"].includes(str(sched, "beta_schedule", "scheduler."))) {
    fail(`scheduler.beta_schedule ${JSON.stringify(sched.beta_schedule)} is not "scaled_linear", "linear" or "squaredcos_cap_v2"`);
  }
  num(sched, "steps_offset", "scheduler.", { int: true, min: 0, max: sched.num_train_timesteps as number });
  if (typeof sched.set_alpha_to_one !== "boolean") fail("scheduler.set_alpha_to_one must be true or false");
  if (sched.prediction_type !== undefined && sched.prediction_type !== m.prediction_type) {
    fail(`scheduler.prediction_type ${JSON.stringify(sched.prediction_type)} disagrees with prediction_type ${JSON.stringify(m.prediction_type)}`);
  }
  const tok = obj(m, "tokenizer", "");
  str(tok, "file", "tokenizer.");
  const maxLength = num(tok, "max_length", "tokenizer.", { int: true, min: 2, max: 1024 });
  for (const k of ["bos_token_id", "eos_token_id", "pad_token_id"]) num(tok, k, "tokenizer.", { int: true, min: 0, max: 10_000_000 });
  const att = obj(m, "attention", "");
  num(att, "map_resolution", "attention.", { int: true, min: 1, max: m.latent_size as number });
  num(att, "map_layers", "attention.", { int: true, min: 1, max: 1024 });
  num(att, "self_injection_layers", "attention.", { int: true, min: 0, max: 1024 });
  num(att, "tokens", "attention.", { int: true, min: maxLength, max: maxLength });
  const defaults = obj(m, "defaults", "");
  num(defaults, "inference_steps", "defaults.", { int: true, min: 1, max: sched.num_train_timesteps as number });
  num(defaults, "guidance_scale", "defaults.", { min: 1, max: 50 });
  num(defaults, "inner_steps", "defaults.", { int: true, min: 1, max: 1000 });
  const graphs = obj(m, "graphs", "");
  for (const name of Object.keys(REQUIRED_IO) as GraphName[]) {
    const g = graphs[name];
    if (g === undefined) {
      if (CORE_GRAPHS.includes(name)) fail(`graphs.${name} is missing`);
      continue;
    }
    if (!isObject(g)) fail(`graphs.${name} is not an object`);
    const entry = g as Record<string, unknown>;
    str(entry, "file", `graphs.${name}.`);
    if (entry.external_data !== null && entry.external_data !== undefined) str(entry, "external_data", `graphs.${name}.`);
    for (const side of ["inputs", "outputs"] as const) {
      const list = entry[side];
      if (!Array.isArray(list)) fail(`graphs.${name}.${side} is not a list`);
      for (const [i, io] of (list as unknown[]).entries()) {
        if (!isObject(io) || typeof io.name !== "string" || typeof io.dtype !== "string" || !Array.isArray(io.shape)) {
          fail(`graphs.${name}.${side}[${i}] needs name, dtype and shape`);
        }
      }
      const names = (list as GraphIo[]).map((io) => io.name);
      for (const needed of REQUIRED_IO[name][side]) {
        if (!names.includes(needed)) fail(`graphs.${name} does not declare ${side === "inputs" ? "input" : "output"} "${needed}" (declares: ${names.join(", ") || "none"})`);
      }
    }
  }
  const files = obj(m, "files", "");
  for (const [file, info] of Object.entries(files)) {
    const problem = relativePathProblem(file);
    if (problem) fail(`files["${file}"]: ${problem}`);
    if (!isObject(info) || typeof info.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(info.sha256) || typeof info.bytes !== "number") {
      fail(`files["${file}"] needs a sha256 (64 hex digits) and bytes`);
    }
  }
  // Every file the engine opens must lie inside the folder and be listed with its hash.
  const used: [string, string][] = [["tokenizer.file", tok.file as string]];
  for (const [name, g] of Object.entries(graphs) as [string, Record<string, unknown>][]) {
    used.push([`graphs.${name}.file`, g.file as string]);
    if (typeof g.external_data === "string") {
      if (g.external_data.includes("/") || g.external_data.includes("\\")) fail(`graphs.${name}.external_data "${g.external_data}" must be a file name beside the graph`);
      used.push([`graphs.${name}.external_data`, posix.join(posix.dirname(g.file as string), g.external_data)]);
    }
  }
  for (const [where, file] of used) {
    const problem = relativePathProblem(file);
    if (problem) fail(`${where} "${file}": ${problem}`);
    if (!(file in files)) fail(`${where} "${file}" is not listed in files with its sha256: re-export the model`);
  }
  return value as Manifest;
}

/** Why a manifest path is not a plain relative path inside the model folder, or null. */
export function relativePathProblem(file: string): string | null {
  if (file === "" || file.includes("\0")) return "is empty or holds a NUL";
  if (file.includes("\\")) return "uses backslashes; paths in nti.json use /";
  if (posix.isAbsolute(file) || /^[A-Za-z]:/.test(file)) return "is an absolute path; paths must be relative to the model folder";
  if (file.split("/").some((part) => part === ".." || part === "." || part === "")) return "must not contain '..', '.' or empty parts";
  return null;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
