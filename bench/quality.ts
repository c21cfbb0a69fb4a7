/**
 * `npm run bench:quality`: the ground-truth edit benchmark on held-out shapes-tiny scenes.
 * For every scene and every inversion method (DDIM only, NPI, Direct Inversion, null-text) the engine
 * inverts the image and makes three Prompt-to-Prompt edits (colour swap, shape swap, background swap,
 * replace + local blend on the edited words); the Python side (exporter/shapes/bench.py) makes the scenes
 * with their true edits and masks and scores the images. Writes bench/results/<name>.{json,md}.
 *
 *   npm run bench:quality -- [--scenes 50] [--model DIR] [--steps 50] [--blend-threshold 0.3]
 *       [--blend-by edited-words|source-attribute] [--name quality] [--keep DIR]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { METHODS, METHOD_INFO } from "../src/core/settings";
import { Engine } from "../src/core/engine";
import { savePng } from "../src/core/image";
import { ROOT, python } from "./common";

interface SetItem {
  id: number;
  source: string;
  prompt: string;
  edits: { type: string; prompt: string; blend: string[]; blend_source_attribute: string[] }[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scenes: { type: "string", default: "50" },
      model: { type: "string", default: path.join(ROOT, "models/shapes-tiny") },
      steps: { type: "string", default: "50" },
      "blend-threshold": { type: "string", default: "0.3" },
      "blend-by": { type: "string", default: "edited-words" },
      keep: { type: "string" },
      out: { type: "string", default: path.join(ROOT, "bench/results") },
      name: { type: "string", default: "quality" },
    },
  });
  const work = values.keep ? path.resolve(values.keep) : mkdtempSync(path.join(tmpdir(), "nti-bench-"));
  const setDir = path.join(work, "set");
  const imageDir = path.join(work, "images");
  mkdirSync(imageDir, { recursive: true });
  python(["exporter.shapes.bench", "make", "--out", setDir, "--scenes", values.scenes!]);
  const set = JSON.parse(readFileSync(path.join(setDir, "set.json"), "utf8")) as { scenes: SetItem[] };
  const engine = await Engine.open(values.model!);
  const steps = Number(values.steps);
  const blendThreshold = Number(values["blend-threshold"]);
  const blendBy = values["blend-by"];
  if (blendBy !== "edited-words" && blendBy !== "source-attribute") throw new Error("--blend-by is edited-words or source-attribute");
  const scenes = [];
  const started = performance.now();
  for (const item of set.scenes) {
    const methods: Record<string, unknown> = {};
    for (const method of METHODS) {
      const inv = await engine.invert({ imagePath: path.join(setDir, item.source), prompt: item.prompt, settings: { method, steps }, compareWithDdim: false });
      const reconstruction = path.join(imageDir, `scene-${item.id}-${method}.png`);
      await savePng(reconstruction, inv.reconstruction, engine.model.manifest.image_size);
      const edits = [];
      for (const e of item.edits) {
        const blendWords = blendBy === "edited-words" ? e.blend : e.blend_source_attribute;
        const r = await engine.edit(inv.artifact, { prompts: [e.prompt], mode: "replace", blendWords, blendThreshold });
        const image = path.join(imageDir, `scene-${item.id}-${method}-${e.type}.png`);
        await savePng(image, r.images[1], engine.model.manifest.image_size);
        edits.push({ type: e.type, image, seconds: r.seconds });
      }
      const h = inv.artifact.header;
      methods[method] = {
        label: METHOD_INFO[method].label,
        reconstruction,
        seconds: h.stats.seconds,
        unetForward: h.stats.unetForward,
        unetBackward: h.stats.unetBackward,
        edits,
      };
    }
    scenes.push({ id: item.id, methods });
    const elapsed = (performance.now() - started) / 1000;
    process.stderr.write(`scene ${scenes.length}/${set.scenes.length} (${elapsed.toFixed(0)} s)\n`);
  }
  await engine.close();
  const results = path.join(work, "results.json");
  const settings = { steps, guidance: 7.5, innerSteps: 10, edit: `replace + local blend on the ${blendBy}`, blendThreshold };
  writeFileSync(results, JSON.stringify({ model: engine.model.id, settings, scenes }));
  mkdirSync(values.out!, { recursive: true });
  const table = python([
    "exporter.shapes.bench",
    "score",
    "--set",
    setDir,
    "--results",
    results,
    "--json",
    path.join(values.out!, `${values.name}.json`),
    "--markdown",
    path.join(values.out!, `${values.name}.md`),
  ]);
  process.stdout.write(table);
  if (!values.keep) rmSync(work, { recursive: true, force: true });
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:quality: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
