/**
 * `npm run bench`: the engine against the PyTorch reference, side by side in one run, on the same weights
 * and the same image, for shapes-tiny and a mid-size random SD-architecture model (sd15-256: SD 1.5's
 * block layout and text encoder at 256 px with a fifth of the UNet channels).
 *
 * For each model, four fresh processes, one after another:
 *   - `nti invert` and `python -m exporter.invert` on the paper's schedule (notebook inner loop, empty-prompt
 *     start, 10 inner iterations): the same algorithm with the same iteration schedule;
 *   - both again on the engine's "fast" schedule (lean inner loop, prompt start, 3 inner iterations, half the
 *     early-stop threshold; src/core/engine.ts).
 * Each does the whole job: encode, pivotal inversion, null-text, the reconstruction and the DDIM-only
 * reconstruction beside it, decoded. Job time excludes process start and model load (reported apart);
 * engine overhead is job time minus the time inside ONNX Runtime's run calls.
 *
 * The reference's weights: shapes-tiny's are rebuilt from its ONNX graphs (exporter.recover); sd15-256 is
 * exported with its random weights saved beside it. Both are cached under out/bench-models.
 * Writes bench/results/performance.{json,md}.
 *
 *   npm run bench -- [--models shapes-tiny,sd15-256] [--name performance]
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { NULL_TEXT_SCHEDULES, SCHEDULE_NAMES, ScheduleName } from "../src/core/engine";
import { loadImage, psnr, savePng } from "../src/core/image";
import { ROOT, fixed, markdownTable, projectPython, python, writeResults } from "./common";

const CACHE = path.join(ROOT, "out/bench-models");
const IMAGE = path.join(ROOT, "media/samples/two-shapes.png");
const PROMPT = "a blue circle and a green square on a gray background";

interface BenchModel {
  id: string;
  description: string;
  onnx: string;
  diffusers: string;
  imageSize: number;
  /** Creates the folders when they are not cached. */
  make(): void;
}

const MODELS: Record<string, BenchModel> = {
  "shapes-tiny": {
    id: "shapes-tiny",
    description: "the bundled model (64 px, 16x16x4 latent, 1.5M-parameter UNet)",
    onnx: path.join(ROOT, "models/shapes-tiny"),
    diffusers: path.join(CACHE, "shapes-tiny-diffusers"),
    imageSize: 64,
    make() {
      python(["exporter.recover", "--model", this.onnx, "--out", this.diffusers]);
    },
  },
  "sd15-256": {
    id: "sd15-256",
    description: "random weights, SD 1.5 block layout and text encoder, 256 px (32x32x4 latent), UNet channels 64/128/256/256",
    onnx: path.join(CACHE, "sd15-256"),
    diffusers: path.join(CACHE, "sd15-256-diffusers"),
    imageSize: 256,
    make() {
      python(["exporter", "random", "--config", "sd15-256", "--out", this.onnx, "--diffusers-out", this.diffusers, "--force", "--quiet"]);
    },
  },
};

interface Schedule {
  name: ScheduleName;
  engineArgs: string[];
  referenceArgs: string[];
}

/** The engine's named schedules, and the same values spelled out for the reference. */
const SCHEDULES: Schedule[] = SCHEDULE_NAMES.map((name) => {
  const s = NULL_TEXT_SCHEDULES[name];
  return {
    name,
    engineArgs: ["--schedule", name],
    referenceArgs: [
      "--inner-loop",
      s.innerLoop,
      "--null-init",
      s.nullInit,
      "--inner-steps",
      String(s.innerSteps),
      "--lr",
      String(s.learningRate),
      "--early-stop",
      String(s.earlyStop),
      "--early-stop-slope",
      String(s.earlyStopSlope),
    ],
  };
});

interface Measured {
  processSeconds: number;
  seconds: number;
  loadSeconds: number;
  unetForward: number;
  unetBackward: number;
  peakRssMb: number;
  psnr: number;
  ddimPsnr: number;
  /** Engine only. */
  onnxSeconds?: number;
  overheadPercent?: number;
  reconstruction: string;
}

function timed(command: string, args: string[]): { stdout: string; seconds: number } {
  const started = performance.now();
  const r = spawnSync(command, args, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 26 });
  const seconds = (performance.now() - started) / 1000;
  if (r.status !== 0) throw new Error(`${path.basename(command)} ${args.slice(0, 3).join(" ")} ... failed:\n${r.stderr}`);
  return { stdout: r.stdout, seconds };
}

function runEngine(m: BenchModel, image: string, schedule: Schedule, work: string): Measured {
  const out = path.join(work, `engine-${schedule.name}`);
  const cli = path.join(ROOT, "dist/cli.js");
  const { stdout, seconds } = timed(process.execPath, [
    cli,
    "invert",
    image,
    "--prompt",
    PROMPT,
    "--model",
    m.onnx,
    "--out",
    out,
    "--json",
    ...schedule.engineArgs,
  ]);
  const r = JSON.parse(stdout);
  return {
    processSeconds: seconds,
    seconds: r.seconds,
    loadSeconds: r.loadSeconds,
    unetForward: r.unetCalls,
    unetBackward: r.unetBackward,
    peakRssMb: r.peakRssMb,
    psnr: r.psnr,
    ddimPsnr: r.ddimPsnr,
    onnxSeconds: r.onnxSeconds,
    overheadPercent: (100 * (r.seconds - r.onnxSeconds)) / r.seconds,
    reconstruction: r.reconstruction,
  };
}

function runReference(m: BenchModel, image: string, schedule: Schedule, work: string): Measured {
  const reconstruction = path.join(work, `reference-${schedule.name}.png`);
  const { stdout, seconds } = timed(projectPython(), [
    "-m",
    "exporter.invert",
    "--model",
    m.diffusers,
    "--image",
    image,
    "--prompt",
    PROMPT,
    "--save",
    reconstruction,
    ...schedule.referenceArgs,
  ]);
  const r = JSON.parse(stdout.trim().split("\n").pop()!);
  return {
    processSeconds: seconds,
    seconds: r.seconds,
    loadSeconds: r.loadSeconds,
    unetForward: r.unetForward,
    unetBackward: r.unetBackward,
    peakRssMb: r.peakRssMb,
    psnr: r.psnr,
    ddimPsnr: r.ddimPsnr,
    reconstruction,
  };
}

/** PSNR between the engine's and the reference's reconstructions: are they computing the same thing? */
async function agreement(a: string, b: string, size: number): Promise<number> {
  const [x, y] = await Promise.all([loadImage(a, size), loadImage(b, size)]);
  return psnr(x.rgb, y.rgb);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      models: { type: "string", default: "shapes-tiny,sd15-256" },
      out: { type: "string", default: path.join(ROOT, "bench/results") },
      name: { type: "string", default: "performance" },
    },
  });
  const build = spawnSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")], { cwd: ROOT, stdio: "inherit" });
  if (build.status !== 0) throw new Error("build failed");
  const work = mkdtempSync(path.join(tmpdir(), "nti-perf-"));
  const results = [];
  for (const id of values.models!.split(",")) {
    const m = MODELS[id];
    if (!m) throw new Error(`unknown model ${id}; known: ${Object.keys(MODELS).join(", ")}`);
    if (!existsSync(path.join(m.onnx, "nti.json")) || !existsSync(path.join(m.diffusers, "model_index.json"))) {
      process.stderr.write(`${id}: preparing the ONNX and diffusers folders under ${CACHE} ...\n`);
      mkdirSync(CACHE, { recursive: true });
      m.make();
    }
    // one preprocessed image for both sides (the engine's own crop and resize)
    const loaded = await loadImage(IMAGE, m.imageSize);
    const image = path.join(work, `${id}-input.png`);
    await savePng(image, loaded.rgb, m.imageSize);
    const row: Record<string, unknown> = { model: id, description: m.description, image: path.relative(ROOT, IMAGE), prompt: PROMPT };
    for (const schedule of SCHEDULES) {
      process.stderr.write(`${id}, ${schedule.name} schedule: engine ...\n`);
      const engine = runEngine(m, image, schedule, work);
      process.stderr.write(`${id}, ${schedule.name} schedule: reference ...\n`);
      const reference = runReference(m, image, schedule, work);
      const agree = await agreement(engine.reconstruction, reference.reconstruction, m.imageSize);
      // JSON has no Infinity: identical images are recorded as null
      row[schedule.name] = { engine, reference, speedup: reference.seconds / engine.seconds, reconstructionAgreementDb: Number.isFinite(agree) ? agree : null };
      process.stderr.write(`  engine ${fixed(engine.seconds)} s, reference ${fixed(reference.seconds)} s\n`);
    }
    const paper = row.paper as { engine: Measured; reference: Measured };
    const fast = row.fast as { engine: Measured; reference: Measured };
    const passes = (x: Measured) => x.unetForward + x.unetBackward;
    const manifest = JSON.parse(readFileSync(path.join(m.onnx, "nti.json"), "utf8")) as { format_version: number; files: Record<string, { bytes: number }> };
    process.stderr.write(`${id}: one gradient call against one UNet forward (python -m exporter time) ...\n`);
    const graphTimes = JSON.parse(timed(projectPython(), ["-m", "exporter", "time", "--model", m.onnx, "--repeats", "5"]).stdout) as {
      unet_batch1_s: number;
      null_text_grad_s: number;
    };
    Object.assign(row, {
      formatVersion: manifest.format_version,
      folderBytes: Object.values(manifest.files).reduce((a, f) => a + f.bytes, 0),
      unetWeightsBytes: manifest.files["unet/weights.bin"]?.bytes ?? null,
      unetForwardSeconds: graphTimes.unet_batch1_s,
      gradientSeconds: graphTimes.null_text_grad_s,
      gradientOverForward: graphTimes.null_text_grad_s / graphTimes.unet_batch1_s,
      peakRssVsReference: paper.engine.peakRssMb / paper.reference.peakRssMb,
      overheadPercent: paper.engine.overheadPercent,
      speedupVsReference: paper.reference.seconds / paper.engine.seconds,
      fastSpeedupVsReference: paper.reference.seconds / fast.engine.seconds,
      fewerPassesFastVsReference: passes(paper.reference) / passes(fast.engine),
    });
    results.push(row);
  }
  rmSync(work, { recursive: true, force: true });

  const lines = [
    "# Performance: the engine against the PyTorch reference",
    "",
    `\`npm run bench\`, ${new Date().toISOString().slice(0, 10)}, ${os()}; every number from one run, side by side.`,
    "Job seconds: from the loaded model to the decoded reconstructions (null-text and DDIM-only), one fresh process each.",
    "Paper schedule: notebook inner loop, empty-prompt start, 10 inner iterations (docs/design.md §1). Fast schedule (`--schedule fast`): lean loop, prompt start, 3 inner iterations, half the early-stop threshold.",
    "",
  ];
  for (const r of results as any[]) {
    lines.push(`## ${r.model}: ${r.description}`, "");
    const rows: (string | number)[][] = [];
    for (const s of SCHEDULES) {
      for (const side of ["engine", "reference"] as const) {
        const x: Measured = r[s.name][side];
        rows.push([
          `${s.name}, ${side === "engine" ? "nti invert" : "PyTorch reference"}`,
          fixed(x.seconds),
          fixed(x.processSeconds),
          `${x.unetForward} + ${x.unetBackward}`,
          x.overheadPercent === undefined ? "" : `${fixed(x.overheadPercent, 1)}%`,
          x.peakRssMb.toFixed(0),
          fixed(x.psnr),
          fixed(x.ddimPsnr),
        ]);
      }
    }
    lines.push(markdownTable(["run", "job s", "process s", "UNet fwd + bwd", "engine overhead", "peak RSS MB", "PSNR", "DDIM PSNR"], rows), "");
    lines.push(
      `- same schedule: the engine is **${fixed(r.speedupVsReference)}x** the reference's speed (paper) and ${fixed(r.fast.speedup)}x on the fast schedule; their reconstructions agree to ${db(r.paper.reconstructionAgreementDb)} / ${db(r.fast.reconstructionAgreementDb)} PSNR (paper / fast).`,
      `- fast schedule vs the reference's paper schedule: **${fixed(r.fastSpeedupVsReference)}x** faster, **${fixed(r.fewerPassesFastVsReference, 1)}x** fewer UNet passes.`,
      `- engine overhead (job time outside ONNX Runtime): ${fixed(r.overheadPercent, 1)}%.`,
      `- model folder: ${fixed(r.folderBytes / 1e6, 1)} MB (format ${r.formatVersion}; the UNet's one weights file ${fixed((r.unetWeightsBytes ?? 0) / 1e6, 1)} MB); peak RSS, engine / reference (paper): ${fixed(r.peakRssVsReference)}x.`,
      `- one gradient call (\`unet/null_text_grad.onnx\`) ${fixed(r.gradientSeconds, 3)} s against one UNet forward (batch 1) ${fixed(r.unetForwardSeconds, 3)} s: **${fixed(r.gradientOverForward)}x** (\`python -m exporter time\`, median of 5).`,
      "",
    );
  }
  const files = writeResults(values.out!, values.name!, { date: new Date().toISOString(), machine: os(), models: results }, lines.join("\n"));
  process.stdout.write(lines.join("\n") + `\nwrote ${files.md} and ${files.json}\n`);
}

const db = (x: number | null) => (x === null ? "identical (uint8)" : `${fixed(x, 1)} dB`);

function os(): string {
  const list = cpus();
  return `${list.length} x ${list[0]?.model ?? "CPU"}, node ${process.version}`;
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
