/**
 * A model folder (docs/design.md §2) opened for the engine: manifest validated, files checked against their
 * sha256, tokenizer loaded, and one ONNX Runtime session per graph created on first use and checked
 * against the I/O the manifest declares. Every failure names the file and the problem in one line.
 */
import { createHash } from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import { availableParallelism } from "node:os";
import * as path from "node:path";
import { BackendOptions, GraphSession, PROVIDER_HINTS, ProviderError, RunStats, autoProviders, firstLine, providerListed } from "./backend";
import { DEFAULT_FAMILY, FAMILIES, type ModelFamily } from "./families";
import { FileReadError, MAX_BYTES, readRegularFile } from "./files";
import { GraphEntry, GraphName, Manifest, ManifestError, validateManifest } from "./manifest";
import { type ExecutionProvider, PROVIDER_CHOICES, type ProviderChoice } from "./settings";
import { DdimScheduler } from "./scheduler";
import { PromptTokenizer } from "./tokenizer";

export class ModelError extends Error {
  override name = "ModelError";
}

export interface OpenModelOptions extends Omit<BackendOptions, "executionProvider"> {
  /** The execution provider, or "auto" (the best the platform's runtime loads; CPU with a note if none). Default cpu. */
  executionProvider?: ProviderChoice;
  /** Check every file's sha256 against nti.json (cached per file size and mtime in this process). */
  verifyHashes?: boolean;
  /** Release the sessions of PER_CALL_GRAPHS after each use. Default: for a model at SD size, not a small one. */
  releasePerCallGraphs?: boolean;
}

const SMALL_UNET_BYTES = 32 * 1024 * 1024;

/**
 * Graphs a job runs once or twice (its prompts in, its image in, its images out). For a model at SD size their
 * sessions are released after each use (Model.withGraph), so that their weights and activation arenas are not
 * resident beside the UNet graphs, which a job runs hundreds of times and keeps: on sd15-256 the text encoder
 * alone holds about 360 MB once run (CHANGELOG, 2026-11-29). Creating it again costs about 1.5 s there, against
 * minutes of UNet work.
 */
const PER_CALL_GRAPHS: ReadonlySet<GraphName> = new Set(["text_encoder", "vae_encoder", "vae_decoder"]);

export class Model {
  private readonly sessions = new Map<GraphName, Promise<GraphSession>>();
  private readonly ready = new Map<GraphName, GraphSession>();
  /** Uses in progress per graph: a per-call graph's session is released when its count returns to zero. */
  private readonly inFlight = new Map<GraphName, number>();
  /** Run statistics of the sessions released so far, so runStats covers the whole life of the model. */
  private readonly releasedStats = new Map<GraphName, RunStats>();
  private chosenProvider: ExecutionProvider = "cpu";

  private constructor(
    readonly dir: string,
    readonly manifest: Manifest,
    /** sha256 of nti.json: identifies the exact model an artifact was made with. */
    readonly manifestSha256: string,
    readonly tokenizer: PromptTokenizer,
    private readonly options: Omit<OpenModelOptions, "executionProvider">,
    /** What was adjusted when opening (threads capped to the cores), for the results' notes. */
    readonly notes: string[] = [],
  ) {}

  static async open(dir: string, options: OpenModelOptions = {}): Promise<Model> {
    const root = path.resolve(dir);
    const stat = await fs.stat(root).catch(() => null);
    if (!stat?.isDirectory()) throw new ModelError(`model folder ${root} does not exist or is not a folder`);
    const manifestPath = path.join(root, "nti.json");
    const raw = await readRegularFile(manifestPath, MAX_BYTES.json).catch((error: FileReadError) => {
      if (error.code === "ENOENT")
        throw new ModelError(`${manifestPath} is missing: export the model with "python -m exporter export --from <diffusers folder> --out ${root}"`);
      throw new ModelError(`${manifestPath}: ${error.message}`);
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString("utf8"));
    } catch (error) {
      throw new ModelError(`${manifestPath} is not valid JSON: ${firstLine(error)}`);
    }
    let manifest: Manifest;
    try {
      manifest = validateManifest(parsed, manifestPath);
    } catch (error) {
      if (error instanceof ManifestError) throw new ModelError(error.message);
      throw error;
    }
    await checkFiles(root, manifest, options.verifyHashes ?? true);
    let tokenizer: PromptTokenizer;
    try {
      tokenizer = await PromptTokenizer.forModel(root, manifest);
    } catch (error) {
      throw new ModelError(firstLine(error));
    }
    const sha = createHash("sha256").update(raw).digest("hex");
    const notes: string[] = [];
    const cores = availableParallelism();
    if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 0)) {
      throw new ModelError(`threads must be a whole number >= 0 (0: automatic), got ${options.threads}`);
    }
    if (options.threads && options.threads > cores) {
      notes.push(`${options.threads} threads asked for, ${cores} used: this machine has ${cores} cores`);
      options = { ...options, threads: cores };
    }
    const { executionProvider: choice = "cpu", ...backend } = options;
    const model = new Model(root, manifest, sha, tokenizer, backend, notes);
    await model.chooseProvider(choice);
    return model;
  }

  /** The execution provider every session of this model runs on. */
  get provider(): ExecutionProvider {
    return this.chosenProvider;
  }

  /**
   * Settles the provider by loading the UNet on each candidate (the session is kept): an explicit provider
   * that cannot load it is an error naming how to get it; "auto" falls back to CPU with a note saying why.
   */
  private async chooseProvider(choice: ProviderChoice): Promise<void> {
    if (!PROVIDER_CHOICES.includes(choice))
      throw new ModelError(`execution provider must be one of ${PROVIDER_CHOICES.join(", ")}, got ${JSON.stringify(choice)}`);
    const tried: string[] = [];
    for (const provider of choice === "auto" ? autoProviders() : [choice]) {
      if (provider === "cpu") break;
      if (!providerListed(provider)) {
        tried.push(`${provider} is not in this ONNX Runtime build (${process.platform}-${process.arch})`);
        continue;
      }
      this.chosenProvider = provider;
      try {
        await this.graph(this.has("unet") ? "unet" : "text_encoder");
        return;
      } catch (error) {
        tried.push(`${provider} did not load the model (${error instanceof ProviderError ? error.reason : firstLine(error)})`);
      }
    }
    this.chosenProvider = "cpu";
    if (choice !== "auto" && choice !== "cpu")
      throw new ModelError(`the ${choice} execution provider is not available: ${tried[0]}: ${PROVIDER_HINTS[choice]}; or use auto or cpu`);
    if (tried.length) this.notes.push(`execution provider: cpu, since ${tried.join(", and ")}`);
  }

  get id(): string {
    return this.manifest.name;
  }

  /** Latent dims [1, C, h, w] of one image. */
  get latentDims(): [number, number, number, number] {
    const m = this.manifest;
    return [1, m.latent_channels, m.latent_size, m.latent_size];
  }

  get latentLength(): number {
    const [, c, h, w] = this.latentDims;
    return c * h * w;
  }

  /** The model family: how prompts become the UNet's conditioning (src/core/families.ts). */
  get family(): ModelFamily {
    return FAMILIES[this.manifest.family ?? DEFAULT_FAMILY];
  }

  /** Length of one prompt's conditioning (one null embedding), [1, 77, D] for SD 1.x/2.x. */
  get embeddingLength(): number {
    return this.family.conditioningLength(this);
  }

  has(name: GraphName): boolean {
    return this.manifest.graphs[name] !== undefined;
  }

  scheduler(steps: number): DdimScheduler {
    return new DdimScheduler({ ...this.manifest.scheduler, prediction_type: this.manifest.prediction_type }, steps);
  }

  /** The session of a graph, created once and checked against the manifest. */
  graph(name: GraphName): Promise<GraphSession> {
    let session = this.sessions.get(name);
    if (!session) {
      session = this.createSession(name);
      this.sessions.set(name, session);
      session.catch(() => this.sessions.delete(name));
    }
    return session;
  }

  /**
   * Intra-op threads for every session: as asked, else one for a small UNet (under SMALL_UNET_BYTES), else
   * ONNX Runtime's default (one per core). On shapes-tiny's 16x16 latents, splitting each op across threads
   * costs more than it gains (one thread is ~8% faster there); on SD-sized UNets two threads are ~1.7x faster
   * than one (bench/results/performance.md).
   */
  get intraOpThreads(): number {
    if (this.chosenProvider !== "cpu") return 0; // thread settings are the CPU provider's
    if (this.options.threads && this.options.threads > 0) return this.options.threads;
    return this.smallUnet ? 1 : 0;
  }

  /** The UNet's folder (graphs and weights) is under SMALL_UNET_BYTES: shapes-tiny, not an SD checkpoint. */
  private get smallUnet(): boolean {
    const unet = this.manifest.graphs.unet;
    if (!unet) return false;
    const dir = path.posix.dirname(unet.file) + "/";
    const bytes = Object.entries(this.manifest.files)
      .filter(([f]) => f.startsWith(dir))
      .reduce((a, [, v]) => a + v.bytes, 0);
    return bytes < SMALL_UNET_BYTES;
  }

  /**
   * A graph's session for one use (`use` runs its calls), for the graphs a job runs once or twice. For a model
   * at SD size, a per-call graph (PER_CALL_GRAPHS) is released afterwards unless another use holds it; a small
   * model keeps it, since there creating it again (about 0.1 s a graph) would cost more than its memory; any
   * other graph's session is kept, as graph() does.
   */
  async withGraph<T>(name: GraphName, use: (session: GraphSession) => Promise<T>): Promise<T> {
    this.inFlight.set(name, (this.inFlight.get(name) ?? 0) + 1);
    try {
      return await use(await this.graph(name));
    } finally {
      const left = this.inFlight.get(name)! - 1;
      this.inFlight.set(name, left);
      if (left === 0 && PER_CALL_GRAPHS.has(name) && (this.options.releasePerCallGraphs ?? !this.smallUnet)) await this.releaseGraph(name);
    }
  }

  /** The graphs whose sessions are open now. */
  residentGraphs(): GraphName[] {
    return [...this.sessions.keys()];
  }

  /** Calls and seconds spent inside ONNX Runtime, per graph used so far (released sessions included). */
  runStats(): Partial<Record<GraphName, RunStats>> {
    const out: Partial<Record<GraphName, RunStats>> = Object.fromEntries([...this.releasedStats].map(([name, stats]) => [name, { ...stats }]));
    for (const [name, session] of this.ready) out[name] = addStats(out[name], session.stats);
    return out;
  }

  private async releaseGraph(name: GraphName): Promise<void> {
    const pending = this.sessions.get(name);
    this.sessions.delete(name);
    const session = this.ready.get(name);
    this.ready.delete(name);
    if (session) this.releasedStats.set(name, addStats(this.releasedStats.get(name), session.stats));
    await (await pending?.catch(() => null))?.release();
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    this.ready.clear();
    await Promise.all(all.map(async (s) => (await s.catch(() => null))?.release()));
  }

  private async createSession(name: GraphName): Promise<GraphSession> {
    const entry = this.manifest.graphs[name];
    if (!entry) {
      throw new ModelError(`${path.join(this.dir, "nti.json")}: this model has no ${name} graph, which this mode needs (re-export without --skip-grad)`);
    }
    const file = path.join(this.dir, entry.file);
    const session = await GraphSession.create(file, file, { ...this.options, executionProvider: this.chosenProvider, threads: this.intraOpThreads });
    checkSessionIo(file, entry, session);
    this.ready.set(name, session);
    return session;
  }
}

function addStats(a: RunStats | undefined, b: RunStats): RunStats {
  return { calls: (a?.calls ?? 0) + b.calls, seconds: (a?.seconds ?? 0) + b.seconds };
}

async function checkFiles(root: string, manifest: Manifest, verifyHashes: boolean): Promise<void> {
  // validateManifest has checked every path is relative, inside, and listed in `files`; here the disk must
  // agree: each file present, regular, inside the folder once symlinks are resolved, of its size and hash.
  const realRoot = await fs.realpath(root);
  const inside = async (file: string, listedIn: string) => {
    const real = await fs.realpath(file).catch(() => null);
    if (real === null) throw new ModelError(`${file} is missing (listed in ${listedIn})`);
    if (real !== realRoot && !real.startsWith(realRoot + path.sep))
      throw new ModelError(`${file} resolves to ${real}, outside the model folder ${realRoot}: refused`);
  };
  const tokenizerDir = path.join(root, path.dirname(manifest.tokenizer.file));
  await inside(tokenizerDir, "nti.json");
  for (const name of await fs.readdir(tokenizerDir).catch(() => [] as string[])) await inside(path.join(tokenizerDir, name), "the tokenizer folder");
  for (const [rel, info] of Object.entries(manifest.files)) {
    const file = path.join(root, rel);
    await inside(file, "nti.json");
    const stat = await fs.stat(file).catch(() => null);
    if (!stat?.isFile()) throw new ModelError(`${file} is missing or not a regular file (listed in nti.json)`);
    if (stat.size !== info.bytes) {
      throw new ModelError(`${file} has ${stat.size} bytes, nti.json says ${info.bytes}: the file is damaged or from another export`);
    }
    if (verifyHashes) {
      const sha = await sha256File(file, stat);
      if (sha !== info.sha256)
        throw new ModelError(
          `${file}: sha256 ${sha.slice(0, 12)}… does not match nti.json (${info.sha256.slice(0, 12)}…): the file is damaged or from another export`,
        );
    }
  }
}

const hashCache = new Map<string, string>();

/** sha256 of a file, streamed (model files can be gigabytes), cached per path, size and mtime. */
async function sha256File(file: string, stat?: { size: number; mtimeMs: number }): Promise<string> {
  const s = stat ?? (await fs.stat(file));
  const key = `${file}\0${s.size}\0${s.mtimeMs}`;
  const cached = hashCache.get(key);
  if (cached) return cached;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const digest = hash.digest("hex");
  hashCache.set(key, digest);
  return digest;
}

/** The graph's real inputs/outputs must be the ones the manifest declares, with matching types and static dims. */
function checkSessionIo(file: string, entry: GraphEntry, session: GraphSession): void {
  for (const side of ["inputs", "outputs"] as const) {
    const actual = side === "inputs" ? session.inputs : session.outputs;
    const byName = new Map(actual.map((a) => [a.name, a]));
    for (const declared of entry[side]) {
      const real = byName.get(declared.name);
      const kind = side === "inputs" ? "input" : "output";
      if (!real) {
        throw new ModelError(`${file}: has no ${kind} "${declared.name}" (it has: ${actual.map((a) => a.name).join(", ")})`);
      }
      if (real.type !== declared.dtype) {
        throw new ModelError(`${file}: ${kind} "${declared.name}" is ${real.type}, nti.json says ${declared.dtype}`);
      }
      if (real.shape.length !== declared.shape.length) {
        throw new ModelError(`${file}: ${kind} "${declared.name}" has rank ${real.shape.length}, nti.json says [${declared.shape.join(", ")}]`);
      }
      declared.shape.forEach((dim, i) => {
        const r = real.shape[i];
        if (typeof dim === "number" && typeof r === "number" && dim !== r) {
          throw new ModelError(`${file}: ${kind} "${declared.name}" has shape [${real.shape.join(", ")}], nti.json says [${declared.shape.join(", ")}]`);
        }
      });
    }
  }
}
