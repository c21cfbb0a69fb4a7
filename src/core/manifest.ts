/**
 * The model folder's `nti.json` (docs/design.md §2): its types and a validator that names the first thing wrong.
 */
import { posix } from "node:path";
import Ajv from "ajv/dist/2020";
import type { ErrorObject } from "ajv";
import manifestSchema from "../../schemas/nti-model.schema.json";
import type { FamilyId } from "./families";
import type { PredictionType, SchedulerConfig } from "./scheduler";

const MANIFEST_FORMAT = "nti-model";
/**
 * The folder versions this engine reads: 1 (each UNet graph with its own weights; unet_control and
 * null_text_grad in nti/) and 2 (the three UNet graphs in unet/ over one unet/weights.bin). The engine reads
 * both the same way: where a graph's weights live is ONNX external data, resolved by the runtime.
 */
const MANIFEST_VERSIONS = [1, 2];

export type GraphName = "text_encoder" | "vae_encoder" | "vae_decoder" | "unet" | "unet_control" | "null_text_grad";

interface GraphIo {
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
  /** How prompts condition the UNet (src/core/families.ts); absent in folders exported before it: "sd1". */
  family?: FamilyId;
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
const REQUIRED_IO: Record<GraphName, { inputs: string[]; outputs: string[] }> = {
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

const ajv = new Ajv({ allErrors: false, strict: true, strictRequired: false, allowUnionTypes: true });
const checkSchema = ajv.compile(manifestSchema);

/**
 * Checks the parsed nti.json against schemas/nti-model.schema.json (the one schema of the manifest, which
 * the exporter also checks before it writes), then what a schema cannot say: checks across fields. Throws
 * a ManifestError naming the field and what is wrong with it, in one line.
 */
export function validateManifest(value: unknown, where = "nti.json"): Manifest {
  const fail = (msg: string): never => {
    throw new ManifestError(`${where}: ${msg}`);
  };
  if (!isObject(value)) fail("is not a JSON object");
  const m = value as Record<string, unknown>;
  // first, with messages of their own: what no other check means anything without
  if (m.format !== MANIFEST_FORMAT) fail(`format is ${JSON.stringify(m.format)}, expected "${MANIFEST_FORMAT}"`);
  if (!MANIFEST_VERSIONS.includes(m.format_version as number)) {
    fail(
      `format_version ${JSON.stringify(m.format_version)} is not supported (this engine reads versions ${MANIFEST_VERSIONS.join(" and ")}); re-export the model with this project's exporter, or update the extension`,
    );
  }
  if (!checkSchema(value)) fail(schemaMessage(checkSchema.errors?.[0], value));
  const manifest = value as unknown as Manifest;
  const sched = manifest.scheduler;
  const tok = manifest.tokenizer;
  const att = manifest.attention;
  const above = (path: string, v: number, min: number) => v < min && fail(`${path} must be >= ${min}, got ${v}`);
  const below = (path: string, v: number, max: number) => v > max && fail(`${path} must be <= ${max}, got ${v}`);
  if (manifest.image_size !== manifest.latent_size * manifest.latent_factor) {
    fail(`image_size ${manifest.image_size} is not latent_size ${manifest.latent_size} x latent_factor ${manifest.latent_factor}`);
  }
  above("scheduler.beta_end", sched.beta_end, sched.beta_start);
  below("scheduler.steps_offset", sched.steps_offset, sched.num_train_timesteps);
  if (sched.prediction_type !== undefined && sched.prediction_type !== manifest.prediction_type) {
    fail(`scheduler.prediction_type ${JSON.stringify(sched.prediction_type)} disagrees with prediction_type ${JSON.stringify(manifest.prediction_type)}`);
  }
  below("attention.map_resolution", att.map_resolution, manifest.latent_size);
  above("attention.tokens", att.tokens, tok.max_length);
  below("attention.tokens", att.tokens, tok.max_length);
  below("defaults.inference_steps", manifest.defaults.inference_steps, sched.num_train_timesteps);
  for (const [name, entry] of Object.entries(manifest.graphs) as [GraphName, GraphEntry][]) {
    const required = REQUIRED_IO[name];
    if (!required) continue; // a graph this engine does not use
    for (const side of ["inputs", "outputs"] as const) {
      const names = entry[side].map((io) => io.name);
      for (const needed of required[side]) {
        if (!names.includes(needed))
          fail(`graphs.${name} does not declare ${side === "inputs" ? "input" : "output"} "${needed}" (declares: ${names.join(", ") || "none"})`);
      }
    }
  }
  // Every file the engine opens must be listed with its hash (the schema has made each path a plain relative one).
  const used: [string, string][] = [["tokenizer.file", tok.file]];
  for (const [name, g] of Object.entries(manifest.graphs) as [string, GraphEntry][]) {
    used.push([`graphs.${name}.file`, g.file]);
    if (typeof g.external_data === "string") used.push([`graphs.${name}.external_data`, posix.join(posix.dirname(g.file), g.external_data)]);
  }
  for (const [whereUsed, file] of used) {
    if (!(file in manifest.files)) fail(`${whereUsed} "${file}" is not listed in files with its sha256: re-export the model`);
  }
  return manifest;
}

const TYPE_NAMES: Record<string, string> = {
  number: "a number",
  integer: "an integer",
  string: "a string",
  object: "an object",
  array: "a list",
  boolean: "true or false",
  null: "null",
};

/** One line from the schema's first error: the field as dotted path, what it must be, what it is. */
function schemaMessage(error: ErrorObject | null | undefined, root: unknown): string {
  if (!error) return "does not match the manifest schema";
  const parts = error.instancePath
    .split("/")
    .slice(1)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  const value = parts.reduce<unknown>((o, k) => (isObject(o) ? o[k] : Array.isArray(o) ? o[Number(k)] : undefined), root);
  const field = parts.reduce((acc, k) => (/^\d+$/.test(k) ? `${acc}[${k}]` : acc === "files" ? `files["${k}"]` : acc ? `${acc}.${k}` : k), "");
  const got = `got ${JSON.stringify(value)}`;
  const p = error.params as Record<string, unknown>;
  if (error.propertyName !== undefined)
    return `${field}["${error.propertyName}"]: ${relativePathProblem(error.propertyName) ?? "is not a plain relative path"}`;
  switch (error.keyword) {
    case "required":
      return `${field ? `${field}.` : ""}${p.missingProperty} is missing`;
    case "type": {
      const types = String(p.type)
        .split(",")
        .map((t) => TYPE_NAMES[t] ?? t);
      return `${field} must be ${types.join(" or ")}, ${got}`;
    }
    case "minimum":
      return `${field} must be >= ${p.limit}, ${got}`;
    case "maximum":
      return `${field} must be <= ${p.limit}, ${got}`;
    case "exclusiveMinimum":
      return `${field} must be > ${p.limit}, ${got}`;
    case "enum":
      return `${field} ${JSON.stringify(value)} is not one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`;
    case "const":
      return `${field} must be ${JSON.stringify(p.allowedValue)}, ${got}`;
    case "propertyNames":
      return `${field}["${p.propertyName}"]: ${relativePathProblem(String(p.propertyName)) ?? "is not a plain relative path"}`;
    case "pattern":
      if (field.endsWith(".sha256")) return `${field.replace(/\.sha256$/, "")} needs a sha256 of 64 hex digits, ${got}`;
      if (field.endsWith(".external_data")) return `${field} "${value}" must be a file name beside the graph`;
      return `${field} "${value}": ${relativePathProblem(String(value)) ?? "is not a plain relative path inside the model folder"}`;
    case "anyOf":
      return `${field} must be ${field.endsWith("unk_token_id") ? "a token id or null" : "a file name beside the graph, or null"}, ${got}`;
    default:
      return `${field || "the manifest"} ${error.message ?? "is not valid"}, ${got}`;
  }
}

/** Why a manifest path is not a plain relative path inside the model folder, or null. */
export function relativePathProblem(file: string): string | null {
  if (file === "" || file.includes("\0")) return "is empty or holds a NUL";
  if (file.includes("\\")) return "uses backslashes; paths in nti.json use /";
  if (posix.isAbsolute(file) || /^[A-Za-z]:/.test(file)) return "is an absolute path; paths must be relative to the model folder";
  if (file.split("/").some((part) => part === ".." || part === "." || part === "")) return "must not contain '..', '.' or empty parts";
  return null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
