/**
 * The models a user has (the bundled `models.json` plus a configured folder) and which of them an artifact
 * was made with. An artifact never names the folder to load: it records the sha256 of its model's
 * nti.json, and the model is found among these by that hash.
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import { MAX_BYTES, readRegularFile } from "./files";

export interface KnownModel {
  id: string;
  name: string;
  /** Absolute folder. */
  path: string;
  description?: string;
}

/** The models of a models.json (paths resolved against its folder); [] when there is none or it is broken. */
export async function readModelList(listFile: string): Promise<KnownModel[]> {
  try {
    const list = JSON.parse((await readRegularFile(listFile, MAX_BYTES.json)).toString("utf8")) as { models?: unknown };
    if (!Array.isArray(list.models)) return [];
    return list.models
      .filter((m): m is KnownModel => typeof m === "object" && m !== null && typeof m.path === "string" && typeof m.id === "string")
      .map((m) => ({
        id: m.id,
        name: typeof m.name === "string" ? m.name : m.id,
        path: path.resolve(path.dirname(listFile), m.path),
        description: m.description,
      }));
  } catch {
    return [];
  }
}

/** sha256 of a model folder's nti.json (what artifacts record), or null when it cannot be read. */
export async function manifestSha256(modelDir: string): Promise<string | null> {
  try {
    return createHash("sha256")
      .update(await readRegularFile(path.join(modelDir, "nti.json"), MAX_BYTES.json))
      .digest("hex");
  } catch {
    return null;
  }
}

/** The candidates whose nti.json is the one recorded (duplicates by folder removed, order kept). */
export async function modelsMatching(candidates: KnownModel[], sha256: string): Promise<KnownModel[]> {
  const seen = new Set<string>();
  const unique = candidates.filter((m) => !seen.has(m.path) && seen.add(m.path));
  const hashes = await Promise.all(unique.map((m) => manifestSha256(m.path)));
  return unique.filter((_, i) => hashes[i] === sha256);
}
