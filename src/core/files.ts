/** File writes that never leave a half-written result and never replace what is there unasked. */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";

/** Writes to a temporary sibling, flushes it, then renames it over `file`; the temp file is removed on failure. */
export async function writeFileAtomic(file: string, data: Uint8Array | string): Promise<void> {
  const dir = path.dirname(file);
  const temp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(temp, "wx");
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.rename(temp, file);
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw error;
  }
}

/**
 * `<dir>/<stem><suffix>` if free, else `<dir>/<stem>-2<suffix>`, `-3`... Checks a set of suffixes together so
 * that the files of one result share one stem.
 */
export async function freeStem(dir: string, stem: string, suffixes: string[]): Promise<string> {
  for (let n = 1; n < 10_000; n++) {
    const candidate = n === 1 ? stem : `${stem}-${n}`;
    const taken = await Promise.all(suffixes.map((s) => fs.stat(path.join(dir, candidate + s)).then(() => true, () => false)));
    if (!taken.some(Boolean)) return path.join(dir, candidate);
  }
  throw new Error(`no free file name for ${stem} in ${dir}`);
}
