/**
 * `npm run figure`: the README's before/after figure (media/edits.png), made by the engine, not by hand.
 * Held-out shapes-tiny scenes (exporter/shapes/bench.py make, the bench:quality set) are inverted with
 * null-text at the default settings and edited three ways (colour, shape, background swap: Prompt-to-Prompt
 * replace with local blend on the changed thing's words, as bench:quality does). One row per edit:
 * the source, the edit, the true edited image, and what changed (|edit - source|, brighter = more).
 *
 *   npm run figure -- [--model DIR] [--out media/edits.png] [--scale 3] [--scenes 0,1,2]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import sharp, { type OverlayOptions } from "sharp";
import { Engine } from "../src/core/engine";
import { loadImage } from "../src/core/image";
import { ROOT, python } from "./common";

interface SetEdit {
  type: string;
  prompt: string;
  truth: string;
  blend: string[];
}

const KINDS = ["colour", "shape", "background"];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string", default: path.join(ROOT, "models/shapes-tiny") },
      out: { type: "string", default: path.join(ROOT, "media/edits.png") },
      scale: { type: "string", default: "3" },
      scenes: { type: "string", default: "0,1,2" },
    },
  });
  const picks = values.scenes!.split(",").map(Number);
  const work = mkdtempSync(path.join(tmpdir(), "nti-figure-"));
  try {
    python(["exporter.shapes.bench", "make", "--out", work, "--scenes", String(Math.max(...picks) + 1)]);
    const set = JSON.parse(readFileSync(path.join(work, "set.json"), "utf8")) as { scenes: { id: number; source: string; prompt: string; edits: SetEdit[] }[] };
    const engine = await Engine.open(values.model!);
    const size = engine.model.manifest.image_size;
    const scale = Number(values.scale);
    const cell = size * scale;
    const gap = 4;
    const rows: { images: Uint8Array[]; label: string }[] = [];
    for (const [row, kind] of KINDS.entries()) {
      const item = set.scenes[picks[row % picks.length]];
      const edit = item.edits.find((e) => e.type === kind)!;
      const inv = await engine.invert({
        imagePath: path.join(work, item.source),
        prompt: item.prompt,
        settings: { method: "nulltext" },
        compareWithDdim: false,
      });
      const r = await engine.edit(inv.artifact, { prompts: [edit.prompt], mode: "replace", blendWords: edit.blend });
      const source = (await loadImage(path.join(work, item.source), size)).rgb;
      const truth = (await loadImage(path.join(work, edit.truth), size)).rgb;
      const changed = new Uint8Array(source.length);
      for (let p = 0; p < source.length; p += 3) {
        const d = Math.max(...[0, 1, 2].map((c) => Math.abs(r.images[1][p + c] - source[p + c])));
        changed.fill(d, p, p + 3);
      }
      rows.push({ images: [source, r.images[1], truth, changed], label: `${item.prompt} -> ${edit.prompt}` });
      process.stderr.write(`${kind}: "${item.prompt}" -> "${edit.prompt}"\n`);
    }
    await engine.close();
    const cols = 4;
    const header = 28;
    const rowLabel = 18;
    const width = cols * cell + (cols + 1) * gap;
    const height = header + rows.length * (cell + rowLabel + gap) + gap;
    const text = (x: number, y: number, s: string, size = 13) =>
      `<text x="${x}" y="${y}" font-family="sans-serif" font-size="${size}" fill="#222">${s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")}</text>`;
    const titles = ["source", "edit (null-text + P2P)", "true edit", "what changed"];
    let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="#fff"/>`;
    titles.forEach((t, c) => (svg += text(gap + c * (cell + gap), 19, t, 14)));
    rows.forEach((r, i) => (svg += text(gap, header + i * (cell + rowLabel + gap) + 13, r.label, 12)));
    svg += "</svg>";
    const composites: OverlayOptions[] = [];
    for (const [i, r] of rows.entries()) {
      for (const [c, rgb] of r.images.entries()) {
        const input = await sharp(Buffer.from(rgb), { raw: { width: size, height: size, channels: 3 } })
          .resize(cell, cell, { kernel: "nearest" })
          .png()
          .toBuffer();
        composites.push({ input, left: gap + c * (cell + gap), top: header + i * (cell + rowLabel + gap) + rowLabel });
      }
    }
    await sharp(Buffer.from(svg)).composite(composites).png().toFile(values.out!);
    process.stdout.write(`${values.out}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`figure: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
