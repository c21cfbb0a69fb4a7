#!/usr/bin/env node
/**
 * `nti`: the engine on the command line, for batch work and benchmarks.
 *   nti invert <image> --prompt "..." [--model DIR] [--method nulltext|npi|direct|ddim] [--steps N]
 *              [--guidance W] [--inner-steps N] [--out DIR] [--plot] [--json]
 *   nti reconstruct <artifact> [--model DIR] [--out DIR] [--json]
 *   nti edit <artifact> --prompt "..." [--mode replace|refine|reweight] [--cross 0.8] [--self 0.4]
 *              [--reweight word=factor] [--blend word,...] [--mask mask.png] [--out DIR] [--json]
 *   nti attention <artifact> [--out DIR] [--json]
 * Bad input: exit code 1 and one line on stderr. Ctrl-C cancels and leaves no partial files (exit 130).
 */
import { existsSync, readFileSync } from "node:fs";
import { rmdir } from "node:fs/promises";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { readArtifact, InversionMethod, InversionSettings } from "../core/artifact";
import { firstLine } from "../core/backend";
import { Engine, ScheduleName } from "../core/engine";
import { loadMask, savePng } from "../core/image";
import type { InnerLoop, NullInit, Progress } from "../core/inversion";
import { freeStem } from "../core/files";
import { prepareOutputFolder, saveAttentionPngs, saveEdit, saveInversion } from "../core/output";
import { EDIT_MODES, EditMode } from "../core/promptToPrompt";
import { writeLossPlot } from "./lossPlot";

const USAGE = `usage:
  nti invert <image> --prompt "..." [--model DIR] [--method nulltext|npi|direct|ddim] [--steps N]
             [--guidance W] [--schedule paper|fast] [--inner-steps N] [--lr X] [--inner-loop notebook|lean]
             [--null-init empty|prompt] [--threads N] [--out DIR] [--plot] [--no-ddim] [--json]
  nti reconstruct <artifact> [--model DIR] [--out DIR] [--json]
  nti edit <artifact> --prompt "..." [--prompt "..."] [--mode replace|refine|reweight] [--cross 0.8]
           [--self 0.4] [--reweight word=factor,...] [--blend word,...] [--blend-threshold 0.3]
           [--mask mask.png] [--mask-mode union|replace] [--model DIR] [--out DIR] [--json]
  nti attention <artifact> [--model DIR] [--out DIR] [--json]

invert --schedule: "paper" (default) is the authors' null-text schedule; "fast" starts from the prompt's
embedding, ends each step's loop on an evaluated embedding and allows 3 iterations (about 5x fewer UNet
passes at equal PSNR on shapes-tiny, bench/results/schedule.md). The flags after it override its values.
edit: Prompt-to-Prompt on a saved inversion; the mode follows from the words changed unless given.
attention: the source prompt's cross-attention maps, one PNG per token.
--model defaults to the bundled shapes-tiny (models.json); --out defaults to ./nti-output.
With --json, one JSON object is printed on stdout and progress is not shown.`;

class UsageError extends Error {}

const OPTIONS = {
  prompt: { type: "string", multiple: true },
  mode: { type: "string" },
  cross: { type: "string" },
  self: { type: "string" },
  reweight: { type: "string", multiple: true },
  blend: { type: "string" },
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
  throw new UsageError(`unknown command "${command}" (invert, reconstruct, edit, attention)`);
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
    // Made now so an unwritable folder fails before the run; removed again if the run fails and it was new.
    const outExisted = existsSync(values.out ?? "nti-output");
    const outDir = await prepareOutputFolder(values.out ?? "nti-output");
    const bar = values.json ? null : new ProgressBar();
    const result = await engine
      .invert({ imagePath: image, prompt, schedule, settings, compareWithDdim: !values["no-ddim"] }, { signal, onProgress: (p) => bar?.update(p) })
      .catch(async (error: unknown) => {
        bar?.done();
        if (!outExisted) await rmdir(outDir).catch(() => undefined); // only if still empty
        throw error;
      });
    bar?.done();
    const saved = await saveInversion(outDir, image, result);
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
        `${summary.method} inversion of ${image} with "${header.prompt}" on ${summary.model}: ${summary.seconds} s, ${summary.unetCalls} UNet forward + ${summary.unetBackward} backward`,
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
  const { artifact, outDir, engine } = await openForArtifact(artifactPath, values);
  try {
    const bar = values.json ? null : new ProgressBar();
    const { image, psnr } = await engine.reconstruct(artifact, { signal, onProgress: (p) => bar?.update(p) });
    bar?.done();
    const stem = await freeStem(outDir, path.parse(artifactPath).name, [".reconstruction.png"]);
    const file = stem + ".reconstruction.png";
    await savePng(file, image, artifact.dims.imageSize);
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
  const reweight: Record<string, number> = {};
  for (const item of (values.reweight ?? []).flatMap((r) => r.split(","))) {
    const [word, factor] = item.split("=");
    const n = Number(factor);
    if (!word || factor === undefined || factor.trim() === "" || !Number.isFinite(n)) throw new UsageError(`--reweight takes word=factor, got "${item}"`);
    reweight[word.trim()] = n;
  }
  const blendWords = values.blend?.split(",").map((w) => w.trim()).filter(Boolean);
  const { artifact, outDir, engine } = await openForArtifact(artifactPath, values);
  try {
    const userMask = values.mask ? await loadMask(values.mask, engine.model.manifest.latent_size) : undefined;
    const bar = values.json ? null : new ProgressBar();
    const result = await engine.edit(
      artifact,
      {
        prompts: values.prompt,
        mode: mode as EditMode | undefined,
        crossReplaceSteps: numberOption(values.cross, "--cross"),
        selfReplaceSteps: numberOption(values.self, "--self"),
        reweight,
        blendWords,
        blendThreshold: numberOption(values["blend-threshold"], "--blend-threshold"),
        userMask,
        userMaskMode: maskMode as "union" | "replace" | undefined,
      },
      { signal, onProgress: (p) => bar?.update(p) },
    );
    bar?.done();
    const saved = await saveEdit(outDir, artifactPath, result);
    const summary = {
      ...saved,
      mode: result.edit.mode,
      prompts: result.edit.prompts,
      sourcePsnr: round(result.sourcePsnr),
      unetCalls: result.unetForward,
      seconds: round(result.seconds),
      notes: result.notes,
    };
    if (values.json) {
      process.stdout.write(JSON.stringify(summary) + "\n");
    } else {
      for (const note of result.notes) process.stderr.write(`note: ${note}\n`);
      const lines = [
        `${result.edit.mode} edit of "${artifact.header.prompt}" in ${summary.seconds} s`,
        ...saved.images.map((f, i) => `"${result.edit.prompts[i + 1]}"  ${f}`),
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
  const { artifact, outDir, engine } = await openForArtifact(artifactPath, values);
  try {
    const bar = values.json ? null : new ProgressBar();
    const result = await engine.attention(artifact, { signal, onProgress: (p) => bar?.update(p) });
    bar?.done();
    const saved = await saveAttentionPngs(outDir, artifactPath, result);
    if (values.json) process.stdout.write(JSON.stringify({ ...saved, seconds: round(result.seconds) }) + "\n");
    else process.stdout.write(`${saved.files.length} maps of "${artifact.header.prompt}" in ${saved.folder}\n`);
    return 0;
  } finally {
    await engine.close();
  }
}

/** An artifact, its output folder (beside it unless --out) and the engine of its model (unless --model). */
async function openForArtifact(artifactPath: string, values: Values) {
  const artifact = await readArtifact(artifactPath);
  const outDir = await prepareOutputFolder(values.out ?? path.dirname(artifactPath));
  const engine = await openEngine(values.model ?? (existsSync(artifact.header.model.dir) ? artifact.header.model.dir : undefined), values);
  return { artifact, outDir, engine };
}

async function openEngine(modelDir: string | undefined, values: Values): Promise<Engine> {
  return Engine.open(modelDir ?? defaultModelDir(), {
    threads: numberOption(values.threads, "--threads"),
    verifyHashes: !values["no-verify"],
  });
}

/** The first model of models.json, next to the package (dist/ or src/cli/ inside it). */
export function defaultModelDir(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    const list = path.join(dir, "models.json");
    if (existsSync(list)) {
      const models = JSON.parse(readFileSync(list, "utf8")).models as { path: string }[];
      return path.join(dir, models[0].path);
    }
    dir = path.dirname(dir);
  }
  throw new UsageError("no models.json found next to nti: pass --model DIR");
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

if (require.main === module) {
  main(process.argv.slice(2)).then(
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
