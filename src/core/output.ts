/**
 * Saving a result set: one stem reserved atomically in the output folder (parallel runs get distinct
 * stems), every file written to a hidden temporary first and then renamed into place, the completing file
 * (the artifact, or the attention maps of an edit) last; all or nothing, never over the source image.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ARTIFACT_EXTENSION, encodeArtifact } from "./artifact";
import sharp from "sharp";
import type { EditResult, InversionResult } from "./engine";
import { reserveStem, tempSibling, writeFileAtomic, writeTemp } from "./files";
import { attentionMapPng, encodePng } from "./image";

export class OutputError extends Error {
  override name = "OutputError";
}

export interface SavedInversion {
  artifact: string;
  reconstruction: string;
  ddimReconstruction: string | null;
  source: string;
  /** The source prompt's cross-attention maps, when they were recorded. */
  attention: string | null;
}

const RESULT_SUFFIXES = {
  artifact: ARTIFACT_EXTENSION,
  reconstruction: ".reconstruction.png",
  ddimReconstruction: ".ddim.png",
  source: ".source.png",
  attention: ".attention.json",
};

/** Creates the output folder if needed and checks it is writable; a clear OutputError otherwise. */
export async function prepareOutputFolder(dir: string): Promise<string> {
  const resolved = path.resolve(dir);
  try {
    await fs.mkdir(resolved, { recursive: true });
    await fs.access(resolved, fs.constants.W_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new OutputError(`output folder ${resolved} ${code === "EACCES" || code === "EROFS" ? "is not writable" : `cannot be created (${code})`}`);
  }
  return resolved;
}

export async function saveInversion(outDir: string, imagePath: string, result: InversionResult, attention?: AttentionData): Promise<SavedInversion> {
  const dir = await prepareOutputFolder(outDir);
  const size = result.artifact.dims.imageSize;
  const files: [string, Uint8Array | string][] = [
    [RESULT_SUFFIXES.source, await encodePng(result.artifact.source, size)],
    [RESULT_SUFFIXES.reconstruction, await encodePng(result.reconstruction, size)],
  ];
  if (result.ddimReconstruction) files.push([RESULT_SUFFIXES.ddimReconstruction, await encodePng(result.ddimReconstruction, size)]);
  if (attention) files.push([RESULT_SUFFIXES.attention, JSON.stringify(attention)]);
  files.push([RESULT_SUFFIXES.artifact, encodeArtifact(result.artifact)]); // last: its presence means the set is complete
  const stem = await saveSet(dir, path.parse(imagePath).name, files, path.resolve(imagePath));
  return {
    artifact: stem + RESULT_SUFFIXES.artifact,
    reconstruction: stem + RESULT_SUFFIXES.reconstruction,
    ddimReconstruction: result.ddimReconstruction ? stem + RESULT_SUFFIXES.ddimReconstruction : null,
    source: stem + RESULT_SUFFIXES.source,
    attention: attention ? stem + RESULT_SUFFIXES.attention : null,
  };
}

/**
 * Writes `<stem><suffix>` for each file under a stem reserved in `dir` (`<name>`, else `<name>-2`...):
 * all temporaries first, then the renames in order. On any failure removes what it wrote and throws an
 * OutputError. Returns the stem (`<dir>/<name>[-n]`).
 */
export async function saveSet(dir: string, name: string, files: [string, Uint8Array | string][], protectedPath?: string): Promise<string> {
  let reservation;
  try {
    reservation = await reserveStem(
      dir,
      name,
      files.map(([suffix]) => suffix),
    );
  } catch (error) {
    throw outputError(error, dir);
  }
  const temps: string[] = [];
  const done: string[] = [];
  try {
    const targets = files.map(([suffix]) => reservation.stem + suffix);
    for (const target of targets) {
      if (protectedPath && path.resolve(target) === protectedPath) throw new OutputError(`refusing to write over the source image ${target}`);
    }
    for (const [i, [, data]] of files.entries()) temps.push(await writeTemp(targets[i], data));
    for (const [i, temp] of temps.entries()) {
      await fs.rename(temp, targets[i]);
      done.push(targets[i]);
    }
    return reservation.stem;
  } catch (error) {
    await Promise.all([...temps, ...done].map((f) => fs.rm(f, { force: true })));
    throw outputError(error, dir);
  } finally {
    await reservation.release();
  }
}

/** Writes each file atomically (files whose names are already decided); on failure removes the ones written. */
export async function writeAll(writes: [string, Uint8Array | string][]): Promise<void> {
  const done: string[] = [];
  try {
    for (const [file, data] of writes) {
      await writeFileAtomic(file, data);
      done.push(file);
    }
  } catch (error) {
    await Promise.all(done.map((f) => fs.rm(f, { force: true })));
    throw outputError(error, "results");
  }
}

function outputError(error: unknown, fallback: string): OutputError {
  if (error instanceof OutputError) return error;
  const e = error as NodeJS.ErrnoException;
  return new OutputError(`cannot write ${e.path ?? fallback}: ${e.code === "ENOSPC" ? "the disk is full" : (e.code ?? e.message)}; nothing was saved`);
}

export interface SavedEdit {
  /** One PNG per edited prompt. */
  images: string[];
  /** "What changed": a heatmap of the (first) edit's per-pixel change from the source. */
  change: string;
  /** That change in numbers. */
  changeSummary: ChangeSummary;
  /** The edit's parameters and change, as saved in the attention JSON. */
  record: EditRecord;
  /** JSON with every prompt's per-token cross-attention maps. */
  attentionMaps: string;
  /** The last local-blend mask of the (first) edit branch as a PNG at latent size, when blending was on. */
  mask: string | null;
}

/** Every prompt's per-token cross-attention maps (content tokens only: no start, end or padding). */
export interface AttentionData {
  format: "nti-attention";
  version: 1;
  resolution: number;
  averagedOver: string;
  prompts: { prompt: string; tokens: { position: number; token: string; map: number[] }[] }[];
  /** An edit's own record (its parameters and change), so an edit can be listed, re-run and compared later. */
  edit?: EditRecord;
}

/** What an edit was asked and what it changed, saved beside its image. */
export interface EditRecord {
  /** The artifact's file name (in the same folder). */
  artifact: string;
  prompts: string[];
  mode: string;
  crossReplaceSteps: number;
  selfReplaceSteps: number;
  reweight: Record<string, number>;
  blendWords: string[];
  /** The blend words were the changed words, chosen by the engine (absent in records made before the choice). */
  blendAutomatic?: boolean;
  blendThreshold: number;
  userMask: boolean;
  /** The edited branches' null embedding (absent in records before it was a choice: "inverted"). */
  editNull?: string;
  seconds: number;
  change: ChangeSummary;
}

/**
 * How much an edit changed the image: the share of pixels whose largest channel moved by more than
 * CHANGED_LEVEL, the mean change in [0, 1], and, when a blend mask was used, the mean change outside it
 * (what should have stayed).
 */
export interface ChangeSummary {
  changedShare: number;
  meanChange: number;
  meanChangeOutsideMask: number | null;
}
const CHANGED_LEVEL = 32 / 255;

function attentionJson(result: EditResult, edit?: EditRecord): string {
  return JSON.stringify({ ...attentionData(result), ...(edit ? { edit } : {}) });
}

/** Per-pixel change of `edited` from `source` (largest channel difference, [0, 1]) and its summary. */
function changeMap(source: Uint8Array, edited: Uint8Array, mask: Float32Array | null, side: number): { change: Float32Array; summary: ChangeSummary } {
  const n = side * side;
  const change = new Float32Array(n);
  let changed = 0;
  let sum = 0;
  let outside = 0;
  let outsideWeight = 0;
  const maskSide = mask ? Math.round(Math.sqrt(mask.length)) : 0;
  for (let p = 0; p < n; p++) {
    const d =
      Math.max(Math.abs(edited[3 * p] - source[3 * p]), Math.abs(edited[3 * p + 1] - source[3 * p + 1]), Math.abs(edited[3 * p + 2] - source[3 * p + 2])) / 255;
    change[p] = d;
    sum += d;
    if (d > CHANGED_LEVEL) changed += 1;
    if (mask) {
      const m = mask[Math.floor((((p / side) | 0) * maskSide) / side) * maskSide + Math.floor(((p % side) * maskSide) / side)];
      outside += (1 - m) * d;
      outsideWeight += 1 - m;
    }
  }
  const round = (x: number) => Number(x.toFixed(4));
  return {
    change,
    summary: {
      changedShare: round(changed / n),
      meanChange: round(sum / n),
      meanChangeOutsideMask: mask && outsideWeight > 0 ? round(outside / outsideWeight) : null,
    },
  };
}

/** A change map as a heatmap PNG: black (unchanged) through red to yellow-white (changed completely). */
async function changePng(change: Float32Array, side: number): Promise<Buffer> {
  const rgb = new Uint8Array(side * side * 3);
  change.forEach((v, p) => {
    const t = Math.min(1, v * 2); // half a channel's range already reads as a full change
    rgb[3 * p] = Math.round(255 * Math.min(1, 2 * t));
    rgb[3 * p + 1] = Math.round(255 * Math.max(0, 2 * t - 1));
    rgb[3 * p + 2] = Math.round(255 * Math.max(0, 3 * t - 2));
  });
  return encodePng(rgb, side);
}

/** Prompt k's map of the token at `position`, r*r values, from the edit's maps [K, r, r, T]. */
function tokenMap(result: EditResult, k: number, position: number): Float32Array {
  const r = result.mapResolution;
  const T = result.maps.length / (result.tokens.length * r * r);
  return Float32Array.from({ length: r * r }, (_, p) => result.maps[(k * r * r + p) * T + position]);
}

/** Side of the result's (square, RGB) images. */
const imageSide = (result: EditResult) => Math.round(Math.sqrt(result.images[0].length / 3));

export function attentionData(result: EditResult): AttentionData {
  const prompts = result.edit.prompts.map((prompt, k) => ({
    prompt,
    tokens: result.tokens[k].slice(1, -1).map((token, i) => {
      const position = i + 1;
      const map = Array.from(tokenMap(result, k, position), (v) => Number(v.toPrecision(6)));
      return { position, token, map };
    }),
  }));
  return { format: "nti-attention", version: 1, resolution: result.mapResolution, averagedOver: "steps, layers, heads", prompts };
}

export async function saveEdit(outDir: string, artifactPath: string, result: EditResult): Promise<SavedEdit> {
  const dir = await prepareOutputFolder(outDir);
  const edits = result.images.length - 1;
  const imageSuffixes = edits === 1 ? [".png"] : Array.from({ length: edits }, (_, i) => `-${i + 1}.png`);
  const size = imageSide(result);
  const files: [string, Uint8Array | string][] = [];
  for (const [i, suffix] of imageSuffixes.entries()) files.push([suffix, await encodePng(result.images[i + 1], size)]);
  let editMask: Float32Array | null = null;
  if (result.mask) {
    const plane = result.mask.length / result.images.length;
    const side = Math.round(Math.sqrt(plane));
    editMask = result.mask.subarray(plane, 2 * plane);
    const grey = Uint8Array.from(editMask, (v) => Math.round(255 * v));
    files.push([
      ".mask.png",
      await sharp(Buffer.from(grey), { raw: { width: side, height: side, channels: 1 } })
        .png()
        .toBuffer(),
    ]);
  }
  const { change, summary } = changeMap(result.source, result.images[1], editMask, size);
  files.push([".change.png", await changePng(change, size)]);
  const e = result.edit;
  const record: EditRecord = {
    artifact: path.basename(artifactPath),
    prompts: e.prompts,
    mode: e.mode,
    crossReplaceSteps: e.crossReplaceSteps,
    selfReplaceSteps: e.selfReplaceSteps,
    reweight: e.reweight,
    blendWords: e.blendWords,
    blendAutomatic: e.blendWordIndices !== null,
    blendThreshold: e.blendThreshold,
    userMask: result.userMask,
    editNull: e.editNull,
    seconds: Number(result.seconds.toFixed(3)),
    change: summary,
  };
  files.push([".attention.json", attentionJson(result, record)]); // last: completes the set
  const stem = await saveSet(dir, `${path.parse(artifactPath).name}.edit`, files, path.resolve(artifactPath));
  return {
    images: imageSuffixes.map((s) => stem + s),
    change: stem + ".change.png",
    changeSummary: summary,
    record,
    attentionMaps: stem + ".attention.json",
    mask: result.mask ? stem + ".mask.png" : null,
  };
}

/** The first prompt's per-token maps as PNGs in `<stem>.attention/` (built in a hidden folder, then renamed). */
export async function saveAttentionPngs(outDir: string, artifactPath: string, result: EditResult): Promise<{ folder: string; files: string[] }> {
  const dir = await prepareOutputFolder(outDir);
  let reservation;
  try {
    reservation = await reserveStem(dir, path.parse(artifactPath).name, [".attention"]);
  } catch (error) {
    throw outputError(error, dir);
  }
  const folder = reservation.stem + ".attention";
  const temp = tempSibling(folder, "tmpdir");
  const size = imageSide(result);
  const files: string[] = [];
  try {
    await fs.mkdir(temp);
    const tokens = result.tokens[0].slice(1, -1);
    for (const [i, token] of tokens.entries()) {
      const position = i + 1;
      const name = `${String(position).padStart(2, "0")}-${token.replace(/[^\p{L}\p{N}_-]+/gu, "_")}.png`;
      await fs.writeFile(path.join(temp, name), await attentionMapPng(tokenMap(result, 0, position), result.mapResolution, size));
      files.push(path.join(folder, name));
    }
    await fs.rename(temp, folder);
  } catch (error) {
    await fs.rm(temp, { recursive: true, force: true });
    throw outputError(error, folder);
  } finally {
    await reservation.release();
  }
  return { folder, files };
}
