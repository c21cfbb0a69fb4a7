/**
 * `npm run bench:schedule`: a search for a cheaper null-text schedule at equal reconstruction quality.
 * On held-out shapes-tiny scenes (exporter/shapes/bench.py) the engine inverts each image with every
 * schedule below (inner loop, starting embedding, inner iterations, Adam learning rate) and records the
 * UNet passes and the reconstruction PSNR; NPI and Direct Inversion are listed for scale. The paper's
 * schedule run by the PyTorch reference costs more passes than the engine's "notebook" loop (its batch-2
 * pass after each inner loop, and the reconstruction sampled again afterwards); its count is derived from
 * the same iteration counts: steps + Σ(1 + k_i + 2) + 2·steps forward, Σ k_i backward.
 * Writes bench/results/<name>.{json,md}.
 *
 *   npm run bench:schedule -- [--scenes 20] [--model DIR] [--steps 50] [--name schedule] [--only name,...]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import type { InversionSettings } from "../src/core/artifact";
import { Engine } from "../src/core/engine";
import { ROOT, fixed, markdownTable, mean, python, writeResults } from "./common";

interface Schedule {
  name: string;
  settings: Partial<InversionSettings>;
}

/** `stopScale` multiplies the early-stop threshold (1e-5 + i * 2e-5): below 1, steps optimise longer. */
const lean = (nullInit: "empty" | "prompt", innerSteps: number, learningRate = 1e-2, stopScale = 1): Schedule => ({
  name: `lean, ${nullInit} start, ${innerSteps} inner, lr ${learningRate}${stopScale === 1 ? "" : `, threshold x${stopScale}`}`,
  settings: { method: "nulltext", innerLoop: "lean", nullInit, innerSteps, learningRate, earlyStop: 1e-5 * stopScale, earlyStopSlope: 2e-5 * stopScale },
});

export const SCHEDULES: Schedule[] = [
  {
    name: "paper (notebook loop, empty start, 10 inner, lr 0.01)",
    settings: { method: "nulltext", innerLoop: "notebook", nullInit: "empty", innerSteps: 10, learningRate: 1e-2 },
  },
  lean("empty", 10),
  lean("empty", 5),
  lean("empty", 3),
  lean("empty", 3, 3e-2),
  lean("prompt", 10),
  lean("prompt", 5),
  lean("prompt", 3),
  lean("prompt", 2),
  lean("prompt", 3, 2e-2),
  lean("prompt", 2, 2e-2),
  lean("prompt", 3, 1e-2, 0.5),
  lean("prompt", 3, 1e-2, 0.25),
  lean("prompt", 3, 1e-2, 0.1),
  lean("prompt", 3, 2e-2, 0.25),
  lean("prompt", 3, 2e-2, 0.1),
  lean("prompt", 3, 2e-2, 0),
  { name: "NPI (no optimisation)", settings: { method: "npi" } },
  { name: "Direct Inversion (no optimisation)", settings: { method: "direct" } },
];

interface Row {
  name: string;
  settings: Partial<InversionSettings>;
  psnr: number[];
  forward: number[];
  backward: number[];
  seconds: number[];
  /** The paper's schedule only: what the PyTorch reference would run for the same iteration counts. */
  referenceForward?: number[];
  referenceBackward?: number[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenes: { type: "string", default: "20" },
      model: { type: "string", default: path.join(ROOT, "models/shapes-tiny") },
      steps: { type: "string", default: "50" },
      out: { type: "string", default: path.join(ROOT, "bench/results") },
      name: { type: "string", default: "schedule" },
      only: { type: "string" },
    },
  });
  const steps = Number(values.steps);
  const work = mkdtempSync(path.join(tmpdir(), "nti-schedule-"));
  python(["exporter.shapes.bench", "make", "--out", work, "--scenes", values.scenes!]);
  const set = JSON.parse(readFileSync(path.join(work, "set.json"), "utf8")) as { scenes: { id: number; source: string; prompt: string }[] };
  const engine = await Engine.open(values.model!);
  await engine.prepare("nulltext");
  const only = values.only?.split(",").map(Number);
  const schedules = only ? SCHEDULES.filter((_, i) => only.includes(i)) : SCHEDULES;
  const rows: Row[] = [];
  const started = performance.now();
  for (const schedule of schedules) {
    const row: Row = { name: schedule.name, settings: schedule.settings, psnr: [], forward: [], backward: [], seconds: [] };
    for (const scene of set.scenes) {
      const r = await engine.invert({
        imagePath: path.join(work, scene.source),
        prompt: scene.prompt,
        settings: { ...schedule.settings, steps },
        compareWithDdim: false,
      });
      const h = r.artifact.header;
      row.psnr.push(r.psnr);
      row.forward.push(h.stats.unetForward);
      row.backward.push(h.stats.unetBackward);
      row.seconds.push(h.stats.seconds);
      if (schedule.settings.innerLoop === "notebook") {
        const k = h.steps.map((s) => s.losses.length);
        (row.referenceForward ??= []).push(steps + k.reduce((a, b) => a + 1 + b + 2, 0) + 2 * steps);
        (row.referenceBackward ??= []).push(k.reduce((a, b) => a + b, 0));
      }
    }
    rows.push(row);
    process.stderr.write(
      `${schedule.name}: ${fixed(mean(row.psnr))} dB, ${fixed(mean(row.forward), 0)} + ${fixed(mean(row.backward), 0)} passes (${((performance.now() - started) / 1000).toFixed(0)} s)\n`,
    );
  }
  await engine.close();
  rmSync(work, { recursive: true, force: true });

  const paper = rows.find((r) => r.referenceForward);
  const referencePasses = paper ? mean(paper.referenceForward!) + mean(paper.referenceBackward!) : NaN;
  const paperPsnr = paper ? mean(paper.psnr) : NaN;
  const summary = rows.map((r) => {
    const passes = mean(r.forward) + mean(r.backward);
    return {
      name: r.name,
      settings: r.settings,
      meanPsnr: mean(r.psnr),
      minPsnr: Math.min(...r.psnr),
      unetForward: mean(r.forward),
      unetBackward: mean(r.backward),
      unetPasses: passes,
      fewerPassesThanReference: referencePasses / passes,
      seconds: mean(r.seconds),
      atLeastPaperPsnr: mean(r.psnr) >= paperPsnr,
    };
  });
  // the cheapest null-text schedule that keeps the paper's mean PSNR
  const best = summary.filter((s) => s.settings.method === "nulltext" && s.atLeastPaperPsnr).sort((a, b) => a.unetPasses - b.unetPasses)[0];
  const table = markdownTable(
    ["schedule", "mean PSNR (dB)", "min PSNR", "UNet forward", "backward", "passes (fwd + bwd)", "fewer than reference", "engine s"],
    summary.map((s) => [
      s === best ? `**${s.name}**` : s.name,
      fixed(s.meanPsnr),
      fixed(s.minPsnr),
      fixed(s.unetForward, 0),
      fixed(s.unetBackward, 0),
      fixed(s.unetPasses, 0),
      `${fixed(s.fewerPassesThanReference, 1)}x`,
      fixed(s.seconds),
    ]),
  );
  const md = [
    `# Null-text schedule search (${set.scenes.length} held-out shapes-tiny scenes, ${steps} steps, w = 7.5)`,
    "",
    `\`npm run bench:schedule -- --scenes ${values.scenes}\`, ${new Date().toISOString().slice(0, 10)}, model ${engine.model.id}.`,
    "Every schedule inverts the same images; passes are per inversion (inversion + reconstruction, no DDIM comparison).",
    `The PyTorch reference runs the paper's schedule with ${fixed(mean(paper?.referenceForward ?? [NaN]), 0)} forward + ${fixed(mean(paper?.referenceBackward ?? [NaN]), 0)} backward passes for the same iteration counts; "fewer than reference" divides that by each row's passes.`,
    best
      ? `In bold: the cheapest null-text schedule whose mean PSNR is at least the paper schedule's (${fixed(paperPsnr)} dB).`
      : "No cheaper schedule kept the paper's mean PSNR.",
    "",
    table,
    "",
  ].join("\n");
  const files = writeResults(
    values.out!,
    values.name!,
    { model: engine.model.id, scenes: set.scenes.length, steps, referencePasses, best: best?.name ?? null, rows: summary, raw: rows },
    md,
  );
  process.stdout.write(md + `\nwrote ${files.md} and ${files.json}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:schedule: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
