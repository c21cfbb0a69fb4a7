/**
 * Saving a result set: every file written atomically under one free stem in the output folder, all or
 * nothing (files already written are removed if a later one fails), never over the source image.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ARTIFACT_EXTENSION, encodeArtifact } from "./artifact";
import type { InversionResult } from "./engine";
import { freeStem, writeFileAtomic } from "./files";
import { encodePng } from "./image";

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
