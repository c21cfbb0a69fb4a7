import { test } from "node:test";
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import {
  PLOT_HEIGHT,
  PLOT_WIDTH,
  PNG_SCALE,
  SERIES,
  plotFontsAvailable,
  renderLossPlotSvg,
  svgPathFor,
  writeLossPlot,
  type LossPlotInput,
} from "../../src/cli/lossPlot";

const N = 50;
const K = 10;

/** 50 steps like a DDIM-50 run: the first steps use all K inner iterations, later ones mostly stop early. */
function synthetic(n = N): LossPlotInput {
  const timesteps = Array.from({ length: n }, (_, i) => 981 - 20 * i);
  const threshold = timesteps.map((_, i) => 1e-5 + i * 2e-5);
  const innerIterations = timesteps.map((_, i) => (i < 12 || i % 9 === 0 ? K : 1 + ((i * 3) % 6)));
  const firstLoss = timesteps.map((_, i) => 3e-3 * Math.exp(-i / 15) + 2e-4);
  const finalLoss = firstLoss.map((f, i) => (innerIterations[i] === K ? Math.max(threshold[i] * 1.5, f / 40) : threshold[i] * 0.7));
  return {
    title: "null-text inversion: a red circle on a white background",
    timesteps,
    finalLoss,
    firstLoss,
    innerIterations,
    threshold,
  };
}

/**
 * Minimal XML well-formedness check (no dependency): one root <svg> in the SVG namespace, every start tag closed
 * in order, no stray '<' or '&' in text (comments and CDATA skipped).
 */
function assertWellFormedSvg(svg: string): void {
  const body = svg.replace(/^\s*<\?xml[^?]*\?>\s*/, "");
  assert.match(body, /^<svg\b[^>]*\bxmlns="http:\/\/www\.w3\.org\/2000\/svg"/, "root element is <svg> in the SVG namespace");
  const stack: string[] = [];
  let roots = 0;
  const token = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>|([^<]+)|(<)/g;
  for (const m of body.matchAll(token)) {
    const [, closing, name, , selfClosing, text, stray] = m;
    if (stray) assert.fail(`stray '<' at offset ${m.index}: ${body.slice(m.index, (m.index ?? 0) + 40)}`);
    if (text !== undefined) {
      assert.doesNotMatch(text, /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/, "unescaped '&' in text");
      if (stack.length === 0) assert.match(text, /^\s*$/, "text outside the root element");
      continue;
    }
    if (name === undefined) continue; // comment or CDATA
    if (closing) {
      assert.equal(stack.pop(), name, `</${name}> closes the open element`);
    } else if (!selfClosing) {
      if (stack.length === 0) roots++;
      stack.push(name);
    } else if (stack.length === 0) {
      roots++;
    }
  }
  assert.deepEqual(stack, [], "all elements closed");
  assert.equal(roots, 1, "exactly one root element");
}

/** Chart elements (not legend icons) of the bar series: ECharts SSR tags each data element with its series. */
function countBars(svg: string): number {
  const bars = svg.match(/<path\b[^>]*\becmeta_series_index="(?:3|4)"[^>]*\becmeta_ssr_type="chart"[^>]*>/g) ?? [];
  return bars.length;
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "nti-lossplot-"));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

test("renderLossPlotSvg: well-formed SVG with legend, axis titles, one bar per step and tooltips", async () => {
  const input = synthetic();
  const svg = await renderLossPlotSvg(input);
  assertWellFormedSvg(svg);

  const meta = await sharp(Buffer.from(svg)).metadata(); // librsvg parses it as SVG
  assert.equal(meta.format, "svg");
  assert.equal(meta.width, PLOT_WIDTH);
  assert.equal(meta.height, PLOT_HEIGHT);

  for (const label of Object.values(SERIES)) assert.ok(svg.includes(`>${label}</text>`), `legend label "${label}"`);
  assert.ok(svg.includes(">loss (log scale)</text>"));
  assert.ok(svg.includes(">inner iterations</text>"));
  assert.ok(svg.includes(">step (diffusion timestep t below)</text>"));
  assert.ok(svg.includes(input.title), "title");
  assert.ok(svg.includes(">t=981</text>") && svg.includes(">t=1</text>"), "timesteps label the step axis");
  assert.match(svg, /<rect width="960" height="640" x="0" y="0" fill="#ffffff"/, "white background");
  assert.match(svg, /stroke-dasharray/, "threshold is dashed");

  assert.equal(countBars(svg), N, "one bar per step");
  const early = input.finalLoss.filter((loss, i) => loss < input.threshold[i]).length;
  assert.ok(early > 0 && early < N, "the synthetic data has both early-stopped and full steps");
  assert.ok(svg.includes(`final loss below threshold at ${early}/${N} steps`));

  assert.ok(svg.includes("<title>step 12 · timestep t=741\n"), "a step's tooltip names its timestep");
  assert.equal((svg.match(/<title>step \d+ · timestep/g) ?? []).length, 3 * N, "tooltips on bars and on both loss lines");
});

test("writeLossPlot: PNG of the expected size with real content, SVG beside it, written atomically", async (t) => {
  const dir = await tempDir(t);
  const pngPath = path.join(dir, "loss.png");
  const written = await writeLossPlot(synthetic(), pngPath);
  assert.deepEqual(written, { png: pngPath, svg: path.join(dir, "loss.svg") });
  assert.deepEqual((await fs.readdir(dir)).sort(), ["loss.png", "loss.svg"], "no temp files left");

  const png = sharp(pngPath);
  const meta = await png.metadata();
  assert.equal(meta.format, "png");
  assert.equal(meta.width, PLOT_WIDTH * PNG_SCALE);
  assert.equal(meta.height, PLOT_HEIGHT * PNG_SCALE);

  const stats = await png.stats();
  assert.equal(stats.isOpaque, true);
  for (const ch of stats.channels.slice(0, 3)) {
    assert.equal(ch.max, 255, "white background");
    assert.ok(ch.min < 60, `dark marks present (min ${ch.min})`);
    assert.ok(ch.stdev > 10, `not blank (stdev ${ch.stdev})`);
  }
  assert.ok(stats.channels[0].mean > 200, "mostly white background");

  // The title text is drawn: its band holds dark pixels.
  const titleBand = await sharp(pngPath)
    .extract({ left: 250 * PNG_SCALE, top: 8 * PNG_SCALE, width: 460 * PNG_SCALE, height: 24 * PNG_SCALE })
    .stats();
  assert.ok(titleBand.channels[0].min < 80, "title text rendered");
  assert.ok(titleBand.channels[0].mean < 250, "title text rendered");

  const svg = await fs.readFile(path.join(dir, "loss.svg"), "utf8");
  assert.equal(countBars(svg), N);
});

test("text renders with a real font, not as boxes (needs fontconfig fonts, e.g. Debian fonts-dejavu-core)", async () => {
  assert.equal(await plotFontsAvailable(), true, "no usable font: plot text would render as boxes");
});

test("writeLossPlot: replaces existing files atomically and derives the SVG name", async (t) => {
  const dir = await tempDir(t);
  const pngPath = path.join(dir, "plot.PNG");
  await fs.writeFile(pngPath, "old");
  await fs.writeFile(path.join(dir, "plot.svg"), "old");
  const written = await writeLossPlot({ ...synthetic(), title: "second run" }, pngPath);
  assert.equal(written.svg, path.join(dir, "plot.svg"));
  assert.deepEqual((await fs.readdir(dir)).sort(), ["plot.PNG", "plot.svg"]);
  assert.ok((await fs.readFile(written.svg, "utf8")).includes(">second run</text>"));
  assert.equal((await sharp(pngPath).metadata()).format, "png");

  assert.equal(svgPathFor("/a/b/loss.png"), "/a/b/loss.svg");
  assert.equal(svgPathFor("/a/b/loss"), "/a/b/loss.svg");
});

test("writeLossPlot: a failed write leaves no temp file behind", async (t) => {
  const dir = await tempDir(t);
  // the PNG target is a non-empty folder, so the final rename fails
  const pngPath = path.join(dir, "busy.png");
  await fs.mkdir(pngPath);
  await fs.writeFile(path.join(pngPath, "keep"), "x");
  await assert.rejects(writeLossPlot(synthetic(), pngPath));
  const left = (await fs.readdir(dir)).sort();
  assert.deepEqual(
    left.filter((f) => f.endsWith(".tmp")),
    [],
    `no temp files: ${left.join(", ")}`,
  );

  await assert.rejects(writeLossPlot(synthetic(), path.join(dir, "missing", "x.png")), /ENOENT/);
  assert.deepEqual(
    (await fs.readdir(dir)).filter((f) => f.endsWith(".tmp")),
    [],
  );
});

test("renderLossPlotSvg: escapes the title, tolerates odd values, rejects mismatched lengths", async () => {
  const odd: LossPlotInput = {
    title: 'prompt with <markup> & "quotes" $& $1 ' + "x".repeat(200),
    timesteps: [501, 1],
    finalLoss: [0, Number.NaN], // not plottable on a log axis: gaps
    firstLoss: [1e-3, Number.POSITIVE_INFINITY],
    innerIterations: [10, 0],
    threshold: [1e-5, 3e-5],
  };
  const svg = await renderLossPlotSvg(odd);
  assertWellFormedSvg(svg);
  assert.ok(!svg.includes("<markup>"));
  assert.ok(svg.includes("<title>prompt with &#60;markup&#62; &#38; &#34;quotes&#34; $&#38; $1 xxx"), "title kept literally");
  assert.equal((svg.match(/<svg\b/g) ?? []).length, 1);
  assert.ok(svg.includes("…"), "long title truncated");
  assert.equal((await sharp(Buffer.from(svg)).metadata()).format, "svg");

  const one = await renderLossPlotSvg({ ...synthetic(1) });
  assertWellFormedSvg(one);
  assert.equal(countBars(one), 1);

  await assert.rejects(renderLossPlotSvg({ ...synthetic(), threshold: [1e-5] }), RangeError);
  await assert.rejects(renderLossPlotSvg(synthetic(0)), RangeError);
});

test("the module works bundled by esbuild into one CommonJS file", async (t) => {
  const esbuild = await import("esbuild");
  const root = path.resolve(__dirname, "..", "..");
  // inside the repository so that the bundle's require("sharp") resolves from node_modules
  const outDir = await fs.mkdtemp(path.join(root, "node_modules", ".cache-lossplot-"));
  t.after(() => fs.rm(outDir, { recursive: true, force: true }));
  const outfile = path.join(outDir, "lossPlot.cjs");
  await esbuild.build({
    entryPoints: [path.join(root, "src", "cli", "lossPlot.ts")],
    bundle: true,
    platform: "node",
    format: "cjs",
    outfile,
    external: ["sharp"],
    logLevel: "silent",
  });
  // the bundle as the CLI ships it: CommonJS, loaded the way node loads dist/cli.js
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const bundled = require(outfile) as typeof import("../../src/cli/lossPlot");
  const written = await bundled.writeLossPlot(synthetic(), path.join(outDir, "bundled.png"));
  assert.equal((await sharp(written.png).metadata()).width, PLOT_WIDTH * PNG_SCALE);
  assert.equal(countBars(await fs.readFile(written.svg, "utf8")), N);
});
