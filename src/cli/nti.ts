#!/usr/bin/env node
/**
 * `nti`: the engine on the command line, for batch work and benchmarks: invert, reconstruct, edit,
 * attention. The commands and flags are described once, in USAGE below (`nti --help`).
 * Bad input: exit code 1 and one line on stderr. Ctrl-C cancels and leaves no partial files (exit 130).
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { rmdir } from "node:fs/promises";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { readArtifact, InversionArtifact } from "../core/artifact";
import {
  EDIT_NULLS,
  METHODS,
  PROVIDER_CHOICES,
  parseReweight,
  parseBlend,
  type EditNull,
  type ExecutionProvider,
  type InversionMethod,
  type InversionSettings,
  type ProviderChoice,
} from "../core/settings";
import { GraphSession, autoProviders, firstLine, providerListed, runtimeInfo } from "../core/backend";
import { Engine, ScheduleName } from "../core/engine";
import { loadMask } from "../core/image";
import type { InnerLoop, NullInit, Progress } from "../core/inversion";
import type { GraphEntry } from "../core/manifest";
import { KnownModel, manifestSha256, modelsMatching, readModelList } from "../core/modelList";
import { encodePng } from "../core/image";
import { prepareOutputFolder, saveAttentionPngs, saveEdit, saveInversion, saveSet } from "../core/output";
import { EDIT_MODES, EditMode } from "../core/promptToPrompt";
import { writeLossPlot } from "./lossPlot";

const USAGE = `usage:
  nti invert <image> --prompt "..." [--model DIR] [--method ${METHODS.join("|")}] [--steps N]
             [--guidance W] [--schedule paper|fast] [--inner-steps N] [--lr X] [--inner-loop notebook|lean]
             [--null-init empty|prompt] [--out DIR] [--plot] [--no-ddim] [--json]
  nti reconstruct <artifact> [--model DIR] [--out DIR] [--json]
  nti edit <artifact> --prompt "..." [--prompt "..."] [--mode replace|refine|reweight] [--cross 0.8]
           [--self 0.4] [--reweight word=factor,...] [--blend word,...|none] [--blend-threshold 0.3]
           [--edit-null empty|inverted]
           [--mask mask.png] [--mask-mode union|replace] [--model DIR] [--out DIR] [--json]
  nti attention <artifact> [--model DIR] [--out DIR] [--json]
  nti doctor [--model DIR] [--json]

every command that runs the model: [--provider ${PROVIDER_CHOICES.join("|")}] [--device-id N] [--threads N]

invert --schedule: "paper" (default) is the authors' null-text schedule; "fast" starts from the prompt's
embedding, ends each step's loop on an evaluated embedding and allows 3 iterations (about 5x fewer UNet
passes at equal PSNR on shapes-tiny, bench/results/schedule.md). The flags after it override its values.
edit: Prompt-to-Prompt on a saved inversion; the mode follows from the words changed unless given. A word
swap blends locally on the swapped words by default, so the image changes only where they are; --blend
names other words, --blend none turns it off. --edit-null: the edited branches' null embedding; a null-text
inversion's optimised nulls fit the source prompt only, so its edits give the others the empty prompt's
("empty", Ju et al. 2024); "inverted" keeps the inversion's in every branch (the null-text paper's editing).
attention: the source prompt's cross-attention maps, one PNG per token.
doctor: the platform, the ONNX Runtime build and its providers, and which providers load each graph of a model.
--provider: "auto" (default) takes the best GPU provider the platform's runtime loads and falls back to the
CPU with a note saying why; --threads applies to the CPU provider only; --device-id picks a CUDA/DirectML GPU.
--model defaults to the bundled shapes-tiny (models.json); for reconstruct, edit and attention, to the model
of models.json the artifact was made with (found by its nti.json hash; an artifact never names a folder).
--out defaults to ./nti-output (invert) or the artifact's folder; a folder made by a failed run is removed.
With --json, one JSON object is printed on stdout and progress is not shown.`;

class UsageError extends Error {}

const OPTIONS = {
  prompt: { type: "string", multiple: true },
  mode: { type: "string" },
  cross: { type: "string" },
  self: { type: "string" },
  reweight: { type: "string", multiple: true },
  blend: { type: "string" },
  "edit-null": { type: "string" },
  "blend-threshold": { type: "string" },
  mask: { type: "string" },
  "mask-mode": { type: "string" },
  model: { type: "string" },
  method: { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  "inner-steps": { type: "string" },
  lr: { type: "string" },
  schedule: { type: "string" },
  "inner-loop": { type: "string" },
  "null-init": { type: "string" },
  threads: { type: "string" },
  provider: { type: "string" },
  "device-id": { type: "string" },
  out: { type: "string" },
  plot: { type: "boolean" },
  "no-ddim": { type: "boolean" },
  "no-verify": { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(firstLine(error));
  }
  const { values, positionals } = parsed;
  const [command, target, ...extra] = positionals;
  if (values.help || command === undefined || command === "help") {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  if (extra.length) throw new UsageError(`unexpected argument "${extra[0]}"`);
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  if (command === "invert") return invert(target, values, controller.signal);
  if (command === "reconstruct") return reconstruct(target, values, controller.signal);
  if (command === "edit") return edit(target, values, controller.signal);
  if (command === "attention") return attention(target, values, controller.signal);
  if (command === "doctor") {
    if (target !== undefined) throw new UsageError(`unexpected argument "${target}"`);
    return doctor(values);
  }
  throw new UsageError(`unknown command "${command}" (invert, reconstruct, edit, attention, doctor)`);
}

type Values = {
  [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K]["type"] extends "string" ? string : boolean;
};

async function invert(image: string | undefined, values: Values, signal: AbortSignal): Promise<number> {
  if (!image) throw new UsageError("nti invert needs an image path");
  if (values.prompt === undefined) throw new UsageError('nti invert needs --prompt "..."');
  if (values.prompt.length > 1) throw new UsageError("nti invert takes one --prompt");
  const prompt = values.prompt[0];
  if (!existsSync(image)) throw new UsageError(`${image}: no such file`);
  const settings: Partial<InversionSettings> = {
    method: values.method as InversionMethod | undefined,
    steps: numberOption(values.steps, "--steps"),
    guidance: numberOption(values.guidance, "--guidance"),
    innerSteps: numberOption(values["inner-steps"], "--inner-steps"),
    learningRate: numberOption(values.lr, "--lr"),
    innerLoop: values["inner-loop"] as InnerLoop | undefined,
    nullInit: values["null-init"] as NullInit | undefined,
  };
  const loadStarted = performance.now();
  const engine = await openEngine(values.model, values);
  try {
    // Bad settings or an unknown word fail here, before the output folder is made.
    const schedule = values.schedule as ScheduleName | undefined;
    const resolved = engine.resolveSettings(settings, schedule);
    engine.checkPrompt(prompt);
    await engine.prepare(resolved.method);
    const loadSeconds = (performance.now() - loadStarted) / 1000;
    const out = await OutputFolder.prepare(values.out ?? "nti-output");
    const bar = values.json ? null : new ProgressBar();
    const { result, saved } = await out.run(async () => {
      const result = await engine
        .invert({ imagePath: image, prompt, schedule, settings, compareWithDdim: !values["no-ddim"] }, { signal, onProgress: (p) => bar?.update(p) })
        .finally(() => bar?.done());
      return { result, saved: await saveInversion(out.dir, image, result) };
    });
    const header = result.artifact.header;
    let lossPlot: string | null = null;
    if (values.plot && header.steps.length) {
      const png = saved.artifact.replace(/\.nti$/, ".loss.png");
      await writeLossPlot(
        {
          title: `null-text inversion: ${header.prompt}`,
          timesteps: header.steps.map((r) => r.timestep),
          finalLoss: header.steps.map((r) => r.losses[r.losses.length - 1]),
          firstLoss: header.steps.map((r) => r.losses[0]),
          innerIterations: header.steps.map((r) => r.losses.length),
          threshold: header.steps.map((r) => r.threshold),
        },
        png,
      );
      lossPlot = png;
    }
    const summary = {
      artifact: saved.artifact,
      reconstruction: saved.reconstruction,
      ddimReconstruction: saved.ddimReconstruction,
      source: saved.source,
      lossPlot,
      method: header.settings.method,
      model: engine.model.id,
      provider: engine.model.provider,
      psnr: round(result.psnr),
      ddimPsnr: result.ddimPsnr === null ? null : round(result.ddimPsnr),
      unetCalls: header.stats.unetForward,
      unetBackward: header.stats.unetBackward,
      seconds: round(header.stats.seconds),
      onnxSeconds: round(sumRunSeconds(engine)),
      loadSeconds: round(loadSeconds),
      peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
      settings: header.settings,
      lossPerStep: header.steps.map((r) => r.losses[r.losses.length - 1]),
      iterationsPerStep: header.steps.map((r) => r.losses.length),
      notes: result.notes,
    };
    if (values.json) {
      process.stdout.write(JSON.stringify(summary) + "\n");
    } else {
      for (const note of result.notes) process.stderr.write(`note: ${note}\n`);
      const lines = [
        `${summary.method} inversion of ${image} with "${clip(header.prompt)}" on ${summary.model} (${summary.provider}): ${summary.seconds} s, ${summary.unetCalls} UNet forward + ${summary.unetBackward} backward`,
        `reconstruction PSNR ${fmtDb(result.psnr)}${result.ddimPsnr !== null ? ` (DDIM only: ${fmtDb(result.ddimPsnr)})` : ""}`,
        `artifact        ${saved.artifact}`,
        `reconstruction  ${saved.reconstruction}`,
        ...(saved.ddimReconstruction ? [`DDIM only       ${saved.ddimReconstruction}`] : []),
        `source          ${saved.source} (as the model sees it)`,
        ...(lossPlot ? [`loss plot       ${lossPlot}`] : []),
      ];
      process.stdout.write(lines.join("\n") + "\n");
    }
    return 0;
  } finally {
    await engine.close();
  }
}

async function reconstruct(artifactPath: string | undefined, values: Values, signal: AbortSignal): Promise<number> {
  if (!artifactPath) throw new UsageError("nti reconstruct needs an artifact path");
  const { artifact, out, engine } = await openForArtifact(artifactPath, values, signal);
  try {
    const bar = values.json ? null : new ProgressBar();
    const { file, psnr } = await out.run(async () => {
      const { image, psnr } = await engine.reconstruct(artifact, { signal, onProgress: (p) => bar?.update(p) }).finally(() => bar?.done());
      const stem = await saveSet(out.dir, path.parse(artifactPath).name, [[".reconstruction.png", await encodePng(image, artifact.dims.imageSize)]]);
      return { file: stem + ".reconstruction.png", psnr };
    });
    if (values.json) process.stdout.write(JSON.stringify({ reconstruction: file, psnr: round(psnr) }) + "\n");
    else process.stdout.write(`reconstruction  ${file}\nPSNR vs the stored source ${fmtDb(psnr)}\n`);
    return 0;
  } finally {
    await engine.close();
  }
}

async function edit(artifactPath: string | undefined, values: Values, signal: AbortSignal): Promise<number> {
  if (!artifactPath) throw new UsageError("nti edit needs an artifact path");
  if (!values.prompt?.length) throw new UsageError('nti edit needs --prompt "the edited prompt"');
  const mode = values.mode;
  if (mode !== undefined && !EDIT_MODES.includes(mode as EditMode)) throw new UsageError(`--mode must be one of ${EDIT_MODES.join(", ")}`);
  const maskMode = values["mask-mode"];
  if (maskMode !== undefined && maskMode !== "union" && maskMode !== "replace") throw new UsageError("--mask-mode must be union or replace");
  const editNull = values["edit-null"] as EditNull | undefined;
  if (editNull !== undefined && !EDIT_NULLS.includes(editNull)) throw new UsageError(`--edit-null must be ${EDIT_NULLS.join(" or ")}`);
  let reweight: Record<string, number>;
  try {
    reweight = parseReweight((values.reweight ?? []).join(","));
  } catch (error) {
    throw new UsageError(`--${(error as Error).message}`);
  }
  const blendWords = parseBlend(values.blend);
  const prompts = values.prompt;
  const { artifact, out, engine } = await openForArtifact(artifactPath, values, signal);
  try {
    const bar = values.json ? null : new ProgressBar();
    const { result, saved } = await out.run(async () => {
      const userMask = values.mask ? await loadMask(values.mask, engine.model.manifest.latent_size, signal) : undefined;
      const result = await engine
        .edit(
          artifact,
          {
            prompts,
            mode: mode as EditMode | undefined,
            crossReplaceSteps: numberOption(values.cross, "--cross"),
            selfReplaceSteps: numberOption(values.self, "--self"),
            reweight,
            blendWords,
            blendThreshold: numberOption(values["blend-threshold"], "--blend-threshold"),
            userMask,
            userMaskMode: maskMode as "union" | "replace" | undefined,
            editNull,
          },
          { signal, onProgress: (p) => bar?.update(p) },
        )
        .finally(() => bar?.done());
      return { result, saved: await saveEdit(out.dir, artifactPath, result) };
    });
    const summary = {
      ...saved,
      mode: result.edit.mode,
      prompts: result.edit.prompts,
      blendWords: result.edit.blendWords,
      editNull: result.edit.editNull,
      sourcePsnr: round(result.sourcePsnr),
      provider: engine.model.provider,
      unetCalls: result.unetForward,
      seconds: round(result.seconds),
      notes: result.notes,
    };
    if (values.json) {
      process.stdout.write(JSON.stringify(summary) + "\n");
    } else {
      for (const note of result.notes) process.stderr.write(`note: ${note}\n`);
      const lines = [
        `${result.edit.mode} edit of "${clip(artifact.header.prompt)}" in ${summary.seconds} s (${result.edit.blendWords.length ? `blend on ${result.edit.blendWords.join(", ")}` : "no blend"}; ${result.edit.editNull} null in the edited branches)`,
        ...saved.images.map((f, i) => `"${clip(result.edit.prompts[i + 1])}"  ${f}`),
        `attention maps  ${saved.attentionMaps}`,
        ...(saved.mask ? [`blend mask      ${saved.mask}`] : []),
      ];
      process.stdout.write(lines.join("\n") + "\n");
    }
    return 0;
  } finally {
    await engine.close();
  }
}

async function attention(artifactPath: string | undefined, values: Values, signal: AbortSignal): Promise<number> {
  if (!artifactPath) throw new UsageError("nti attention needs an artifact path");
  const { artifact, out, engine } = await openForArtifact(artifactPath, values, signal);
  try {
    const bar = values.json ? null : new ProgressBar();
    const { result, saved } = await out.run(async () => {
      const result = await engine.attention(artifact, { signal, onProgress: (p) => bar?.update(p) }).finally(() => bar?.done());
      return { result, saved: await saveAttentionPngs(out.dir, artifactPath, result) };
    });
    if (values.json) process.stdout.write(JSON.stringify({ ...saved, seconds: round(result.seconds) }) + "\n");
    else process.stdout.write(`${saved.files.length} maps of "${clip(artifact.header.prompt)}" in ${saved.folder}\n`);
    return 0;
  } finally {
    await engine.close();
  }
}

/**
 * The output folder, made before the run so an unwritable one fails first, and removed again (only if it
 * is still empty) when a run that created it fails.
 */
class OutputFolder {
  private constructor(
    readonly dir: string,
    private readonly created: boolean,
  ) {}

  static async prepare(dir: string): Promise<OutputFolder> {
    const existed = existsSync(dir);
    return new OutputFolder(await prepareOutputFolder(dir), !existed);
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (this.created) await rmdir(this.dir).catch(() => undefined);
      throw error;
    }
  }
}

/**
 * An artifact, its output folder (beside it unless --out) and the engine of its model: --model, else the
 * model of models.json whose nti.json hash the artifact records. The artifact's own header never chooses.
 */
async function openForArtifact(
  artifactPath: string,
  values: Values,
  signal: AbortSignal,
): Promise<{ artifact: InversionArtifact; out: OutputFolder; engine: Engine }> {
  const artifact = await readArtifact(artifactPath, signal);
  const made = artifact.header.model;
  const known = await knownModels();
  let modelDir = values.model;
  if (modelDir === undefined) {
    const [match] = await modelsMatching(known, made.manifestSha256);
    if (!match) {
      throw new UsageError(
        `${artifactPath} was made with model "${made.id}" (nti.json sha256 ${made.manifestSha256.slice(0, 12)}…), which is none of the known models (${known.map((m) => m.id).join(", ") || "none"}): pass --model with the folder it was made with, or re-invert the image`,
      );
    }
    modelDir = match.path;
  } else if ((await manifestSha256(modelDir)) !== made.manifestSha256) {
    const matches = await modelsMatching(known, made.manifestSha256);
    const hint = matches.length
      ? `the known model "${matches[0].id}" is that one (--model ${matches[0].path})`
      : "pass --model with the folder it was made with";
    throw new UsageError(
      `${artifactPath} was made with model "${made.id}" (nti.json sha256 ${made.manifestSha256.slice(0, 12)}…), not with the one at ${path.resolve(modelDir)}: ${hint}, or re-invert the image`,
    );
  }
  const out = await OutputFolder.prepare(values.out ?? path.dirname(artifactPath));
  const engine = await out.run(() => openEngine(modelDir, values));
  return { artifact, out, engine };
}

async function openEngine(modelDir: string | undefined, values: Values): Promise<Engine> {
  return Engine.open(modelDir ?? (await defaultModelDir()), {
    threads: numberOption(values.threads, "--threads"),
    executionProvider: providerOption(values.provider),
    deviceId: numberOption(values["device-id"], "--device-id"),
    verifyHashes: !values["no-verify"],
  });
}

function providerOption(value: string | undefined): ProviderChoice {
  if (value === undefined) return "auto";
  if (!(PROVIDER_CHOICES as readonly string[]).includes(value))
    throw new UsageError(`--provider must be one of ${PROVIDER_CHOICES.join(", ")}, got "${value}"`);
  return value as ProviderChoice;
}

/**
 * `nti doctor`: what this machine can run. Each provider the runtime lists is asked to load each graph of the
 * model (sessions made and released), so "loads" means what a run would get, not what a list promises.
 */
async function doctor(values: Values): Promise<number> {
  const runtime = runtimeInfo();
  const report: Record<string, unknown> = {
    platform: `${process.platform}-${process.arch}`,
    node: process.version,
    onnxruntime: runtime.version,
    providers: runtime.providers,
  };
  const lines = [
    `platform     ${report.platform} (Node ${process.version})`,
    `onnxruntime  ${runtime.version}: ${runtime.providers.map((p) => `${p.name}${p.bundled ? "" : " (installable)"}`).join(", ")}`,
    `auto tries   ${autoProviders().join(", ")}`,
  ];
  const modelDir = values.model ?? (await defaultModelDir());
  const model = await Engine.open(modelDir, { verifyHashes: !values["no-verify"] }).then((e) => e.model);
  const providers = PROVIDER_CHOICES.filter((p): p is ExecutionProvider => p !== "auto" && providerListed(p));
  const graphs = [];
  const entries = Object.entries(model.manifest.graphs).filter((e): e is [string, GraphEntry] => e[1] !== undefined);
  const dataFile = (e: GraphEntry) => (e.external_data ? path.posix.join(path.posix.dirname(e.file), e.external_data) : null);
  for (const [name, entry] of entries) {
    const data = dataFile(entry);
    // the graph and its weights; a weights file several graphs share (format version 2) counts for each
    const bytes = (model.manifest.files[entry.file]?.bytes ?? 0) + (data ? (model.manifest.files[data]?.bytes ?? 0) : 0);
    const sharesWith = entries.filter(([other, e]) => other !== name && data !== null && dataFile(e) === data).map(([other]) => other);
    const loads: Record<string, string> = {};
    for (const provider of providers) {
      const started = performance.now();
      loads[provider] = await GraphSession.create(name, path.join(model.dir, entry.file), { executionProvider: provider })
        .then(async (s) => {
          await s.release();
          return `loads (${((performance.now() - started) / 1000).toFixed(1)} s)`;
        })
        .catch((error: unknown) => `no: ${firstLine(error).replace(/^.*cannot load it: /, "")}`);
    }
    graphs.push({ name, file: entry.file, bytes, sharesWeightsWith: sharesWith, loads });
  }
  await model.release();
  const folderBytes = Object.values(model.manifest.files).reduce((a, f) => a + f.bytes, 0);
  report.model = { id: model.id, dir: model.dir, formatVersion: model.manifest.format_version, folderBytes, graphs };
  if (values.json) {
    process.stdout.write(JSON.stringify(report) + "\n");
    return 0;
  }
  lines.push(`model        ${model.id} at ${model.dir} (format ${model.manifest.format_version}, ${(folderBytes / 1e6).toFixed(1)} MB)`);
  for (const g of graphs) {
    const shared = g.sharesWeightsWith.length ? ` (weights shared with ${g.sharesWeightsWith.join(", ")})` : "";
    lines.push(`  ${g.name.padEnd(16)} ${(g.bytes / 1e6).toFixed(1).padStart(8)} MB  ${g.file}${shared}`);
    for (const [provider, verdict] of Object.entries(g.loads)) lines.push(`    ${provider.padEnd(8)} ${verdict}`);
  }
  process.stdout.write(lines.join("\n") + "\n");
  return 0;
}

/** models.json next to the package (dist/ or src/cli/ inside it), or null. */
function modelListFile(): string | null {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    const list = path.join(dir, "models.json");
    if (existsSync(list)) return list;
    dir = path.dirname(dir);
  }
  return null;
}

let modelList: Promise<KnownModel[]> | undefined;
function knownModels(): Promise<KnownModel[]> {
  const list = modelListFile();
  return (modelList ??= list ? readModelList(list) : Promise.resolve([]));
}

/** The first model of models.json. */
export async function defaultModelDir(): Promise<string> {
  const [first] = await knownModels();
  if (!first) throw new UsageError("no models.json found next to nti: pass --model DIR");
  return first.path;
}

function numberOption(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n)) throw new UsageError(`${flag} needs a number, got "${value}"`);
  return n;
}

function sumRunSeconds(engine: Engine): number {
  return Object.values(engine.model.runStats()).reduce((a, s) => a + (s?.seconds ?? 0), 0);
}

/** A prompt as shown in a summary line: at most 80 characters. */
const clip = (text: string) => (text.length > 80 ? `${text.slice(0, 77)}...` : text);
const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
const fmtDb = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)} dB` : "identical");

/** One line of progress on stderr when it is a terminal. */
class ProgressBar {
  private readonly tty = process.stderr.isTTY === true;
  private last = 0;

  update(p: Progress): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.last < 100 && p.step !== p.total) return;
    this.last = now;
    const width = 24;
    const filled = p.total ? Math.round((width * p.step) / p.total) : 0;
    let detail = p.timestep !== undefined ? ` t=${p.timestep}` : "";
    if (p.record) detail += ` loss ${p.record.losses[p.record.losses.length - 1].toExponential(2)} (${p.record.losses.length} it)`;
    process.stderr.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${p.phase} ${p.step}/${p.total}${detail}\x1b[K`);
  }

  done(): void {
    if (this.tty) process.stderr.write("\r\x1b[K");
  }
}

/**
 * ONNX Runtime 1.30 reads /proc/self/cmdline while it creates a session and recurses once per byte or so:
 * past ~29 KB of command line (a long --prompt) the process dies with SIGSEGV. Such a command line is
 * moved into an environment variable of a child nti, whose own command line stays short.
 */
const SAFE_COMMAND_LINE_BYTES = 16 * 1024;
const ARGV_ENV = "NTI_ARGV_JSON";

function commandLineBytes(): number {
  return [process.execPath, ...process.execArgv, ...process.argv.slice(1)].reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
}

function relaunchWithShortCommandLine(args: string[]): void {
  const child = spawn(process.execPath, [...process.execArgv, __filename], { stdio: "inherit", env: { ...process.env, [ARGV_ENV]: JSON.stringify(args) } });
  // The terminal's Ctrl-C reaches the child too (same process group); this process waits for its verdict.
  process.on("SIGINT", () => undefined);
  process.on("SIGTERM", () => child.kill("SIGTERM"));
  child.on("error", (error) => {
    process.stderr.write(`nti: cannot start: ${error.message}\n`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    if (!signal) process.exit(code ?? 1);
    process.removeAllListeners(signal);
    process.kill(process.pid, signal); // end as the child ended
    process.exit(1);
  });
}

function commandLineArgs(): string[] | null {
  const moved = process.env[ARGV_ENV];
  if (moved !== undefined) {
    delete process.env[ARGV_ENV];
    return JSON.parse(moved) as string[];
  }
  if (commandLineBytes() > SAFE_COMMAND_LINE_BYTES) {
    relaunchWithShortCommandLine(process.argv.slice(2));
    return null;
  }
  return process.argv.slice(2);
}

const args = require.main === module ? commandLineArgs() : null;
if (args) {
  main(args).then(
    (code) => process.exit(code),
    (error: unknown) => {
      if (error instanceof Error && error.name === "AbortError") {
        process.stderr.write("\nnti: cancelled; nothing was written\n");
        process.exit(130);
      }
      process.stderr.write(`nti: ${firstLine(error)}${error instanceof UsageError ? " (see nti --help)" : ""}\n`);
      if (process.env.NTI_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
      process.exit(1);
    },
  );
}

export { main };
