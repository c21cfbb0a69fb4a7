/**
 * Saving a result set: every file written atomically under one free stem in the output folder, all or
 * nothing (files already written are removed if a later one fails), never over the source image.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ARTIFACT_EXTENSION, encodeArtifact } from "./artifact";
import sharp from "sharp";
import type { EditResult, InversionResult } from "./engine";
import { freeStem, writeFileAtomic } from "./files";
import { attentionMapPng, encodePng } from "./image";

export class OutputError extends Error {
  override name = "OutputError";
}

export interface SavedInversion {
  artifact: string;
  reconstruction: string;
  ddimReconstruction: string | null;
  source: string;
}

export const RESULT_SUFFIXES = {
  artifact: ARTIFACT_EXTENSION,
  reconstruction: ".reconstruction.png",
  ddimReconstruction: ".ddim.png",
  source: ".source.png",
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

export async function saveInversion(outDir: string, imagePath: string, result: InversionResult): Promise<SavedInversion> {
  const dir = await prepareOutputFolder(outDir);
  const stem = await freeStem(dir, path.parse(imagePath).name, Object.values(RESULT_SUFFIXES));
  const size = result.artifact.dims.imageSize;
  const saved: SavedInversion = {
    artifact: stem + RESULT_SUFFIXES.artifact,
    reconstruction: stem + RESULT_SUFFIXES.reconstruction,
    ddimReconstruction: result.ddimReconstruction ? stem + RESULT_SUFFIXES.ddimReconstruction : null,
    source: stem + RESULT_SUFFIXES.source,
  };
  const writes: [string, Uint8Array][] = [
    [saved.source, await encodePng(result.artifact.source, size)],
    [saved.reconstruction, await encodePng(result.reconstruction, size)],
  ];
  if (saved.ddimReconstruction && result.ddimReconstruction) writes.push([saved.ddimReconstruction, await encodePng(result.ddimReconstruction, size)]);
  writes.push([saved.artifact, encodeArtifact(result.artifact)]); // last: its presence means the set is complete
  await writeAll(writes, path.resolve(imagePath));
  return saved;
}

/** Writes each file atomically; on any failure removes the ones already written and throws an OutputError. */
export async function writeAll(writes: [string, Uint8Array | string][], protectedPath?: string): Promise<void> {
  const done: string[] = [];
  try {
    for (const [file, data] of writes) {
      if (protectedPath && path.resolve(file) === protectedPath) throw new OutputError(`refusing to write over the source image ${file}`);
      await writeFileAtomic(file, data);
      done.push(file);
    }
  } catch (error) {
    await Promise.all(done.map((f) => fs.rm(f, { force: true })));
    if (error instanceof OutputError) throw error;
    const e = error as NodeJS.ErrnoException;
    throw new OutputError(`cannot write ${e.path ?? "results"}: ${e.code === "ENOSPC" ? "the disk is full" : e.code ?? e.message}; nothing was saved`);
  }
}

export interface SavedEdit {
  /** One PNG per edited prompt. */
  images: string[];
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
}

export function attentionJson(result: EditResult): string {
  return JSON.stringify(attentionData(result));
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
  const suffixes = [...imageSuffixes, ".attention.json", ".mask.png"];
  const stem = await freeStem(dir, `${path.parse(artifactPath).name}.edit`, suffixes);
  const size = imageSide(result);
  const writes: [string, Uint8Array | string][] = [];
  const images = imageSuffixes.map((s) => stem + s);
  for (const [i, file] of images.entries()) writes.push([file, await encodePng(result.images[i + 1], size)]);
  let mask: string | null = null;
  if (result.mask) {
    const plane = result.mask.length / result.images.length;
    const side = Math.round(Math.sqrt(plane));
    mask = stem + ".mask.png";
    const grey = Uint8Array.from(result.mask.subarray(plane, 2 * plane), (v) => Math.round(255 * v));
    writes.push([mask, await sharp(Buffer.from(grey), { raw: { width: side, height: side, channels: 1 } }).png().toBuffer()]);
  }
  const attentionMaps = stem + ".attention.json";
  writes.push([attentionMaps, attentionJson(result)]);
  await writeAll(writes);
  return { images, attentionMaps, mask };
}

/** The first prompt's per-token maps as PNGs in `<stem>.attention/` (built in a hidden folder, then renamed). */
export async function saveAttentionPngs(outDir: string, artifactPath: string, result: EditResult): Promise<{ folder: string; files: string[] }> {
  const dir = await prepareOutputFolder(outDir);
  const stem = await freeStem(dir, path.parse(artifactPath).name, [".attention"]);
  const folder = stem + ".attention";
  const temp = path.join(dir, `.${path.basename(folder)}.${process.pid}.tmp`);
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
    const e = error as NodeJS.ErrnoException;
    throw new OutputError(`cannot write ${folder}: ${e.code === "ENOSPC" ? "the disk is full" : e.code ?? e.message}; nothing was saved`);
  }
  return { folder, files };
}
