/**
 * An inversion saved once and edited many times: a safetensors file whose `__metadata__.nti` holds the
 * JSON header (settings, prompt, model id and manifest hash, source hash, loss trace) and whose tensors
 * hold z_T, the per-step null embeddings, Direct Inversion's offsets and the preprocessed source.
 * Written atomically; read back with every field checked.
 */
import { FileReadError, MAX_BYTES, readRegularFile } from "./files";
import type { Model } from "./model";
import { decodeSafetensors, encodeSafetensors, SafetensorsError, StoredTensor } from "./safetensors";
import { METHOD_INFO, checkInversionSettings, type InversionMethod, type InversionSettings } from "./settings";

export const ARTIFACT_FORMAT = "nti-inversion";
export const ARTIFACT_VERSION = 1;
export const ARTIFACT_EXTENSION = ".nti";

// the settings' vocabulary lives in ./settings; re-exported for the artifact's readers
export type { InversionSettings };

/** One null-text step: the loss before each inner Adam step, and the early-stop threshold it was held to. */
export interface StepRecord {
  timestep: number;
  losses: number[];
  threshold: number;
}

interface ArtifactHeader {
  format: typeof ARTIFACT_FORMAT;
  version: typeof ARTIFACT_VERSION;
  created: string;
  prompt: string;
  settings: InversionSettings;
  model: { id: string; manifestSha256: string; dir: string };
  source: { path: string; sha256: string; width: number; height: number };
  /** Null-text only: one record per sampling step, highest timestep first. */
  steps: StepRecord[];
  stats: { unetForward: number; unetBackward: number; seconds: number; psnr: number | null; ddimPsnr: number | null };
  notes: string[];
}

export interface InversionArtifact {
  header: ArtifactHeader;
  /** [1, C, h, w] */
  zT: Float32Array;
  /** [n, tokens, D], n = steps (null-text) or 1 (the same embedding at every step). */
  nullEmbeddings: Float32Array;
  /** Direct Inversion's per-step latent offsets [steps, C, h, w]. */
  directOffsets: Float32Array | null;
  /** The preprocessed source, uint8 [size, size, 3]. */
  source: Uint8Array;
  /** A second latent [1, C, h, w] for methods that couple two (EDICT's y_T); null or absent otherwise. */
  coupledLatent?: Float32Array | null;
  dims: { latent: [number, number, number, number]; tokens: number; hidden: number; imageSize: number };
  /** The file it was read from, for messages. */
  file?: string;
}

export class ArtifactError extends Error {
  override name = "ArtifactError";
}

export function encodeArtifact(a: InversionArtifact): Uint8Array {
  const { latent, tokens, hidden, imageSize } = a.dims;
  const n = a.nullEmbeddings.length / (tokens * hidden);
  const tensors: Record<string, StoredTensor> = {
    z_T: { dtype: "F32", shape: [...latent], data: a.zT },
    null_embeddings: { dtype: "F32", shape: [n, tokens, hidden], data: a.nullEmbeddings },
    source: { dtype: "U8", shape: [imageSize, imageSize, 3], data: a.source },
  };
  if (a.coupledLatent) tensors.coupled_latent = { dtype: "F32", shape: [...latent], data: a.coupledLatent };
  if (a.directOffsets) {
    tensors.direct_offsets = { dtype: "F32", shape: [a.header.settings.steps, latent[1], latent[2], latent[3]], data: a.directOffsets };
  }
  return encodeSafetensors(tensors, { nti: JSON.stringify(a.header) });
}

export async function readArtifact(file: string, signal?: AbortSignal): Promise<InversionArtifact> {
  const bytes = await readRegularFile(file, MAX_BYTES.artifact, signal).catch((error: unknown) => {
    if (error instanceof FileReadError)
      throw new ArtifactError(`${file}: ${error.code === "ENOTREG" || error.code === "ETOOBIG" ? "the artifact " : ""}${error.message}`);
    throw error;
  });
  try {
    return { ...decodeArtifact(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length)), file };
  } catch (error) {
    if (error instanceof ArtifactError || error instanceof SafetensorsError) {
      throw new ArtifactError(`${file}: not a valid inversion artifact: ${error.message}`);
    }
    throw error;
  }
}

export function decodeArtifact(bytes: Uint8Array): InversionArtifact {
  const fail = (msg: string): never => {
    throw new ArtifactError(msg);
  };
  const { tensors, metadata } = decodeSafetensors(bytes);
  if (typeof metadata.nti !== "string") fail("no nti header");
  let header: unknown;
  try {
    header = JSON.parse(metadata.nti);
  } catch {
    fail("the nti header is not valid JSON");
  }
  const h = checkHeader(header, fail);
  const tensor = (name: string, dtype: string, rank: number) => {
    const t = tensors[name];
    if (!t) fail(`tensor ${name} is missing`);
    if (t.dtype !== dtype || t.shape.length !== rank) fail(`tensor ${name} is ${t.dtype}[${t.shape}], expected ${dtype} of rank ${rank}`);
    return t;
  };
  const z = tensor("z_T", "F32", 4);
  const nulls = tensor("null_embeddings", "F32", 3);
  const source = tensor("source", "U8", 3);
  const steps = h.settings.steps;
  if (z.shape[0] !== 1) fail(`z_T has batch ${z.shape[0]}, expected 1`);
  const method = METHOD_INFO[h.settings.method];
  if (nulls.shape[0] !== 1 && nulls.shape[0] !== steps) fail(`null_embeddings has ${nulls.shape[0]} rows for ${steps} steps`);
  if (method.perStepNullEmbeddings && nulls.shape[0] !== steps) fail(`a ${method.label} artifact has ${nulls.shape[0]} null embeddings for ${steps} steps`);
  if (source.shape[0] !== source.shape[1] || source.shape[2] !== 3) fail(`source has shape [${source.shape}], expected [size, size, 3]`);
  let offsets: Float32Array | null = null;
  if (method.directOffsets) {
    const o = tensor("direct_offsets", "F32", 4);
    if (o.shape[0] !== steps || o.shape.slice(1).join() !== z.shape.slice(1).join())
      fail(`direct_offsets has shape [${o.shape}], expected [${steps}, ${z.shape.slice(1)}]`);
    offsets = o.data as Float32Array;
  }
  let coupled: Float32Array | null = null;
  if (method.coupledLatent) {
    const c = tensor("coupled_latent", "F32", 4);
    if (c.shape.join() !== z.shape.join()) fail(`coupled_latent has shape [${c.shape}], expected [${z.shape}]`);
    coupled = c.data as Float32Array;
  }
  for (const [name, t] of [
    ["z_T", z.data],
    ["null_embeddings", nulls.data],
    ["direct_offsets", offsets],
    ["coupled_latent", coupled],
  ] as const) {
    const at = t ? firstNonFinite(t as Float32Array) : -1;
    if (at >= 0) fail(`tensor ${name} holds ${(t as Float32Array)[at]} at index ${at}: the inversion is damaged; re-invert the image`);
  }
  return {
    header: h,
    zT: z.data as Float32Array,
    nullEmbeddings: nulls.data as Float32Array,
    directOffsets: offsets,
    coupledLatent: coupled,
    source: source.data as Uint8Array,
    dims: { latent: z.shape as [number, number, number, number], tokens: nulls.shape[1], hidden: nulls.shape[2], imageSize: source.shape[0] },
  };
}

/** Index of the first NaN or infinity, or -1. */
function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

function checkHeader(value: unknown, fail: (msg: string) => never): ArtifactHeader {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObj(value)) fail("the nti header is not an object");
  const h = value as Record<string, unknown>;
  if (h.format !== ARTIFACT_FORMAT) fail(`format ${JSON.stringify(h.format)} is not "${ARTIFACT_FORMAT}"`);
  if (h.version !== ARTIFACT_VERSION) fail(`version ${JSON.stringify(h.version)} is not supported (this engine reads ${ARTIFACT_VERSION})`);
  if (typeof h.prompt !== "string" || h.prompt.trim() === "") fail("prompt is not a non-empty string");
  if (typeof h.created !== "string") fail("created is not a string");
  const s = h.settings;
  if (!isObj(s)) fail("settings is missing");
  const settings = s as Record<string, unknown>;
  // Artifacts written before these settings existed used the paper's loop and start.
  settings.innerLoop ??= "notebook";
  settings.nullInit ??= "empty";
  // the ranges the CLI and the settings accept (the engine checks steps against the model's timesteps)
  checkInversionSettings(settings, (message) => fail(`settings: ${message}`));
  const model = h.model;
  if (!isObj(model) || typeof model.id !== "string" || typeof model.manifestSha256 !== "string" || typeof model.dir !== "string")
    fail("model must have id, manifestSha256 and dir");
  const source = h.source;
  if (
    !isObj(source) ||
    typeof source.path !== "string" ||
    typeof source.sha256 !== "string" ||
    typeof source.width !== "number" ||
    typeof source.height !== "number"
  ) {
    fail("source must have path, sha256, width and height");
  }
  if (!Array.isArray(h.steps)) fail("steps is not a list");
  for (const [i, r] of (h.steps as unknown[]).entries()) {
    if (
      !isObj(r) ||
      typeof r.timestep !== "number" ||
      typeof r.threshold !== "number" ||
      !Array.isArray(r.losses) ||
      !r.losses.every((x) => typeof x === "number")
    ) {
      fail(`steps[${i}] needs timestep, threshold and losses`);
    }
  }
  if (METHOD_INFO[settings.method as InversionMethod].lossTrace && (h.steps as unknown[]).length !== settings.steps)
    fail(`steps has ${(h.steps as unknown[]).length} records for ${settings.steps} steps`);
  const stats = h.stats;
  if (!isObj(stats) || typeof stats.unetForward !== "number" || typeof stats.unetBackward !== "number" || typeof stats.seconds !== "number") {
    fail("stats must have unetForward, unetBackward and seconds");
  }
  if (!Array.isArray(h.notes) || !h.notes.every((n) => typeof n === "string")) fail("notes is not a list of strings");
  return value as unknown as ArtifactHeader;
}

/** An artifact only makes sense with the exact model it was made with. */
export function checkArtifactMatchesModel(artifact: InversionArtifact, model: Model, file = artifact.file ?? "the artifact"): void {
  const made = artifact.header.model;
  if (made.manifestSha256 !== model.manifestSha256) {
    throw new ArtifactError(
      `${file} was made with model "${made.id}" (nti.json sha256 ${made.manifestSha256.slice(0, 12)}…), not with "${model.id}" at ${model.dir} (${model.manifestSha256.slice(0, 12)}…): re-invert the image with this model`,
    );
  }
  const [, c, h, w] = model.latentDims;
  const [, ac, ah, aw] = artifact.dims.latent;
  const m = model.manifest;
  const found = `z_T [${artifact.dims.latent.slice(1)}], null_embeddings [${artifact.dims.tokens}, ${artifact.dims.hidden}], source ${artifact.dims.imageSize} px`;
  const wanted = `[${c},${h},${w}], [${m.tokenizer.max_length}, ${m.text_hidden_size}], ${m.image_size} px`;
  if (
    c !== ac ||
    h !== ah ||
    w !== aw ||
    artifact.dims.tokens !== m.tokenizer.max_length ||
    artifact.dims.hidden !== m.text_hidden_size ||
    artifact.dims.imageSize !== m.image_size
  ) {
    throw new ArtifactError(`${file}: its tensors (${found}) do not fit model "${model.id}" (${wanted}): the file is damaged`);
  }
  if (artifact.header.settings.steps > m.scheduler.num_train_timesteps) {
    throw new ArtifactError(`${file}: settings.steps ${artifact.header.settings.steps} is more than the model's ${m.scheduler.num_train_timesteps} timesteps`);
  }
}
