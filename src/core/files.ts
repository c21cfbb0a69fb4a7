/**
 * The engine's file system rules, in one place:
 * - inputs are read only from regular files, size-checked before reading, abortable (a FIFO, /dev/zero or
 *   a symlink to them is refused before anything is read);
 * - a result set reserves its stem atomically (an exclusively created lock file), so parallel runs, from
 *   the CLI or several VS Code windows, never share or overwrite a stem;
 * - every file is written to a hidden temporary and renamed into place; what a killed process leaves
 *   (temporaries, a lock, a set without its artifact) is removed by the next run in that folder.
 */
import { createHash, randomBytes } from "node:crypto";
import { constants as fsConstants, promises as fs, type Stats } from "node:fs";
import { hostname } from "node:os";
import * as path from "node:path";

/** Why an input file was not read; the caller prefixes the file name and what it was for. */
export class FileReadError extends Error {
  override name = "FileReadError";
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

const MB = 1024 * 1024;
/** Largest inputs read: images and masks, artifacts, JSON (manifests, tokenizers, models.json). */
export const MAX_BYTES = { image: 512 * MB, artifact: 1024 * MB, json: 64 * MB } as const;

const READ_CHUNK = 4 * MB;
// Opening a FIFO without O_NONBLOCK waits for a writer; with it, open returns and fstat says what it is.
const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0);

function kind(stat: Stats): string {
  if (stat.isDirectory()) return "a folder";
  if (stat.isFIFO()) return "a named pipe (FIFO)";
  if (stat.isCharacterDevice()) return "a character device";
  if (stat.isBlockDevice()) return "a block device";
  if (stat.isSocket()) return "a socket";
  return "not a regular file";
}

/**
 * The bytes of a regular file of at most `maxBytes`, read in chunks so `signal` can stop it. Symlinks are
 * followed; what they point to must be a regular file too.
 */
export async function readRegularFile(file: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
  signal?.throwIfAborted();
  const check = (stat: Stats) => {
    if (!stat.isFile()) throw new FileReadError(`is ${kind(stat)}, not a regular file`, "ENOTREG");
    if (stat.size > maxBytes) throw new FileReadError(`is ${(stat.size / MB).toFixed(0)} MB, more than the ${maxBytes / MB} MB accepted`, "ETOOBIG");
  };
  const stat = await fs.stat(file).catch((error: NodeJS.ErrnoException) => {
    throw new FileReadError(`cannot read it (${error.code ?? error.message})`, error.code);
  });
  check(stat); // before opening: a FIFO or a device is never opened
  const handle = await fs.open(file, OPEN_FLAGS).catch((error: NodeJS.ErrnoException) => {
    throw new FileReadError(`cannot read it (${error.code ?? error.message})`, error.code);
  });
  try {
    const opened = await handle.stat();
    check(opened); // the path may have been swapped between stat and open
    const buffer = Buffer.alloc(opened.size);
    let offset = 0;
    while (offset < buffer.length) {
      signal?.throwIfAborted();
      const { bytesRead } = await handle.read(buffer, offset, Math.min(READ_CHUNK, buffer.length - offset), offset);
      if (bytesRead === 0) break;
      offset += bytesRead;
    }
    return offset < buffer.length ? buffer.subarray(0, offset) : buffer;
  } finally {
    await handle.close();
  }
}

/** Whether a process of this machine is alive (EPERM: it exists, owned by someone else). */
function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A short id of this machine, so a folder shared over the network is never cleaned for another host's runs. */
export const HOST_ID = createHash("sha256").update(hostname()).digest("hex").slice(0, 8);

/** Temporaries are `.<name>.<host>-<pid>.<random>.tmp` (files) or `.<name>.<host>-<pid>.<random>.tmpdir`. */
export function tempSibling(file: string, suffix = "tmp"): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${HOST_ID}-${process.pid}.${randomBytes(4).toString("hex")}.${suffix}`);
}
const TEMP_NAME = /^\..+\.(?:([0-9a-f]{8})-)?(\d+)\.[0-9a-f]{8}\.tmp(?:dir)?$/;

/** Writes to a temporary sibling, flushes it, then renames it over `file`; the temp file is removed on failure. */
export async function writeFileAtomic(file: string, data: Uint8Array | string): Promise<void> {
  const temp = await writeTemp(file, data);
  try {
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw error;
  }
}

/** Writes `data` to a flushed temporary sibling of `file` and returns its path (removed on failure). */
export async function writeTemp(file: string, data: Uint8Array | string): Promise<string> {
  const temp = tempSibling(file);
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(temp, "wx");
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    return temp;
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw error;
  }
}

/** A stem held by this process: `<dir>/<name>` plus the suffixes it will write. */
export interface StemReservation {
  /** `<dir>/<name>`: append a suffix to get a file of the set. */
  stem: string;
  /** Removes the lock (the set's files stay). */
  release(): Promise<void>;
}

interface LockRecord {
  host: string;
  pid: number;
  suffixes: string[];
}

const lockPath = (dir: string, name: string) => path.join(dir, `.${name}.nti-lock`);

/**
 * Reserves `<dir>/<stem><suffix>` for every suffix (in the order they are written: the last one completes
 * the set), or `<stem>-2`, `-3`...: the first candidate whose lock
 * this process creates exclusively and none of whose files exist. Checking the files after taking the lock
 * means a run that finished and released the same stem is seen. Stale locks and temporaries of dead
 * processes of this machine are removed first.
 */
export async function reserveStem(dir: string, stem: string, suffixes: string[]): Promise<StemReservation> {
  await removeStale(dir);
  const record: LockRecord = { host: HOST_ID, pid: process.pid, suffixes };
  for (let n = 1; n < 10_000; n++) {
    const name = n === 1 ? stem : `${stem}-${n}`;
    const lock = lockPath(dir, name);
    try {
      await fs.writeFile(lock, JSON.stringify(record), { flag: "wx" });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") continue;
      throw error;
    }
    const taken = await Promise.all(
      suffixes.map((s) =>
        fs.lstat(path.join(dir, name + s)).then(
          () => true,
          () => false,
        ),
      ),
    );
    if (taken.some(Boolean)) {
      await fs.rm(lock, { force: true });
      continue;
    }
    return { stem: path.join(dir, name), release: () => fs.rm(lock, { force: true }) };
  }
  throw new Error(`no free file name for ${stem} in ${dir}`);
}

/**
 * What a killed run of this machine left in `dir`: its temporaries, and its lock together with the files
 * of the set it had reserved unless the set's last file exists (they were free when it took the lock, so
 * they are that run's partial set).
 */
export async function removeStale(dir: string): Promise<string[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const temp = TEMP_NAME.exec(name);
    if (temp && !name.endsWith(".nti-lock")) {
      const [, host, pid] = temp;
      if ((host === undefined || host === HOST_ID) && !processAlive(Number(pid))) {
        await fs.rm(path.join(dir, name), { recursive: true, force: true });
        removed.push(name);
      }
      continue;
    }
    const lock = /^\.(.+)\.nti-lock$/.exec(name);
    if (!lock) continue;
    let record: LockRecord;
    try {
      record = JSON.parse(await fs.readFile(path.join(dir, name), "utf8")) as LockRecord;
    } catch {
      continue; // being written, or not ours: leave it
    }
    if (record.host !== HOST_ID || processAlive(record.pid) || !Array.isArray(record.suffixes)) continue;
    const last = record.suffixes[record.suffixes.length - 1];
    const complete =
      typeof last === "string" &&
      (await fs.lstat(path.join(dir, lock[1] + last)).then(
        () => true,
        () => false,
      ));
    for (const suffix of complete ? [] : record.suffixes) {
      if (typeof suffix === "string" && !suffix.includes("/") && !suffix.includes(path.sep)) {
        await fs.rm(path.join(dir, lock[1] + suffix), { recursive: true, force: true });
      }
    }
    await fs.rm(path.join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}
