/**
 * Loss plot for `nti invert --plot`: per-step null-text optimisation losses (log scale) over the early-stop
 * threshold, and the inner Adam iterations used per step, rendered headless in Node.
 *
 * Charting: Apache ECharts in server-side-rendering mode (`ssr: true`, SVG renderer, no DOM, no canvas), which
 * produces an SVG string; sharp (librsvg) rasterises that SVG to PNG. It bundles into a single CommonJS file with
 * esbuild (only the chart types and components used are registered, so the rest is tree-shaken away).
 * (Vega 6 was the first candidate, but its `vega-canvas` node build uses top-level await, which esbuild cannot
 * bundle to CommonJS.)
 */
import * as path from "node:path";
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TitleComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { SVGRenderer } from "echarts/renderers";
import type { BarSeriesOption, LineSeriesOption } from "echarts/charts";
import type { GridComponentOption, LegendComponentOption, TitleComponentOption } from "echarts/components";
import type { ComposeOption } from "echarts/core";
import sharp from "sharp";
import { writeAll } from "../core/output";

type PlotOption = ComposeOption<LineSeriesOption | BarSeriesOption | GridComponentOption | LegendComponentOption | TitleComponentOption>;

// Only what the plot uses, so that a bundle carries ~0.5 MB (minified) of ECharts rather than all of it.
echarts.use([LineChart, BarChart, GridComponent, LegendComponent, TitleComponent, SVGRenderer]);

export interface LossPlotInput {
  /** e.g. "null-text inversion: a red circle on a white background" */
  title: string;
  /** diffusion timestep of each step (e.g. 981, 961, ... 1), step 0 first */
  timesteps: number[];
  /** final inner loss per step */
  finalLoss: number[];
  /** loss before the first inner iteration per step */
  firstLoss: number[];
  /** inner iterations used per step */
  innerIterations: number[];
  /** early-stop threshold per step */
  threshold: number[];
}

/** Size of the SVG in CSS pixels; the PNG is rasterised at `PNG_SCALE` times this. */
export const PLOT_WIDTH = 960;
export const PLOT_HEIGHT = 640;
export const PNG_SCALE = 2;

/** Legend labels (also the ECharts series names), exported for tests and callers. */
export const SERIES = {
  finalLoss: "final loss",
  firstLoss: "first loss (before inner iterations)",
  threshold: "early-stop threshold",
  itersReached: "inner iterations, final loss below threshold",
  itersNotReached: "inner iterations, threshold not reached",
} as const;

/**
 * Fonts: librsvg resolves these through fontconfig. "DejaVu Sans" is Debian/Ubuntu's default (fonts-dejavu-core),
 * the rest are fallbacks for macOS/Windows; "sans-serif" lets fontconfig pick whatever is installed.
 */
const FONT_FAMILY = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif";

const COLORS = {
  finalLoss: "#1f77b4",
  firstLoss: "#ff7f0e",
  threshold: "#444444",
  itersReached: "#2ca02c",
  itersNotReached: "#d62728",
};

const MAX_TITLE_CHARS = 110;

/** A positive finite number, or null (a gap on a log axis). */
function logValue(v: number): number | null {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : null;
}

function truncate(text: string, max: number): string {
  const oneLine = text.replace(/\s+/g, " ").trim();
  return oneLine.length <= max ? oneLine : `${oneLine.slice(0, max - 1)}…`;
}

function formatLoss(v: number): string {
  return Number.isFinite(v) ? v.toExponential(2) : String(v);
}

function validate(input: LossPlotInput): number {
  const n = input.timesteps.length;
  if (n < 1) throw new RangeError("loss plot: no steps (timesteps is empty)");
  const fields = ["finalLoss", "firstLoss", "innerIterations", "threshold"] as const;
  for (const field of fields) {
    const len = input[field].length;
    if (len !== n) throw new RangeError(`loss plot: ${field} has ${len} entries, timesteps has ${n}`);
  }
  return n;
}

/** Label interval so that about 10 labelled ticks show on the step axis. */
function labelEvery(n: number): number {
  return Math.max(1, Math.ceil(n / 10));
}

function buildOption(input: LossPlotInput, n: number): PlotOption {
  const steps = Array.from({ length: n }, (_, i) => String(i));
  const reached = input.finalLoss.map((loss, i) => Number.isFinite(loss) && loss < input.threshold[i]);
  const iters = input.innerIterations.map((v) => (Number.isFinite(v) && v >= 0 ? v : null));
  const every = labelEvery(n);
  // every `every`-th step and the last one; a multiple that would crowd the last label is left out
  const showLabel = (i: number): boolean => i === n - 1 || (i % every === 0 && n - 1 - i >= Math.ceil(every / 2));
  const nReached = reached.filter(Boolean).length;
  const totalIters = iters.reduce<number>((a, v) => a + (v ?? 0), 0);
  const tFirst = input.timesteps[0];
  const tLast = input.timesteps[n - 1];
  const subtitle =
    `${n} steps (diffusion timestep ${tFirst} → ${tLast}) · final loss below threshold at ${nReached}/${n} steps · ` +
    `${totalIters} inner iterations in total · last final loss ${formatLoss(input.finalLoss[n - 1])}`;

  const gridLeft = 90;
  const gridRight = 56;
  const textStyle = { fontFamily: FONT_FAMILY, color: "#222" };
  const axisName = { fontSize: 13, color: "#222", fontFamily: FONT_FAMILY };
  const splitLine = { show: true, lineStyle: { color: "#e6e6e6" } };

  return {
    backgroundColor: "#ffffff",
    animation: false,
    textStyle,
    title: {
      text: truncate(input.title, MAX_TITLE_CHARS),
      subtext: subtitle,
      left: "center",
      top: 8,
      textStyle: { fontSize: 17, fontWeight: "bold", color: "#111", fontFamily: FONT_FAMILY },
      subtextStyle: { fontSize: 12, color: "#444", fontFamily: FONT_FAMILY },
    },
    legend: [
      {
        top: 84,
        left: gridLeft,
        itemWidth: 30,
        itemHeight: 12,
        itemGap: 36,
        textStyle: { fontSize: 12, color: "#222", fontFamily: FONT_FAMILY },
        data: [
          SERIES.finalLoss,
          SERIES.firstLoss,
          // a threshold line has no point symbols: keep the legend's dashed line, hide its default circle
          { name: SERIES.threshold, itemStyle: { opacity: 0 } },
        ],
      },
      {
        top: 398,
        left: gridLeft,
        itemWidth: 22,
        itemHeight: 12,
        itemGap: 48,
        textStyle: { fontSize: 12, color: "#222", fontFamily: FONT_FAMILY },
        data: [SERIES.itersReached, SERIES.itersNotReached],
      },
    ],
    grid: [
      { left: gridLeft, right: gridRight, top: 110, height: 270 },
      { left: gridLeft, right: gridRight, top: 424, height: 136 },
    ],
    xAxis: [
      {
        type: "category",
        gridIndex: 0,
        data: steps,
        boundaryGap: true,
        axisTick: { alignWithLabel: true, interval: (i: number) => showLabel(i) },
        axisLabel: { show: false },
        splitLine: { ...splitLine, interval: (i: number) => showLabel(i) },
      },
      {
        type: "category",
        gridIndex: 1,
        data: steps,
        boundaryGap: true,
        name: "step (diffusion timestep t below)",
        nameLocation: "middle",
        nameGap: 42,
        nameTextStyle: axisName,
        axisTick: { alignWithLabel: true, interval: (i: number) => showLabel(i) },
        axisLabel: {
          interval: (i: number) => showLabel(i),
          fontSize: 11,
          color: "#333",
          lineHeight: 14,
          formatter: (_value: string, i: number) => `${i}\nt=${input.timesteps[i]}`,
        },
      },
    ],
    yAxis: [
      {
        type: "log",
        logBase: 10,
        gridIndex: 0,
        name: "loss (log scale)",
        nameLocation: "middle",
        nameGap: 66,
        nameTextStyle: axisName,
        axisLine: { show: true },
        axisTick: { show: true },
        axisLabel: { fontSize: 11, color: "#333", formatter: (v: number) => v.toExponential(0) },
        splitLine,
      },
      {
        type: "value",
        gridIndex: 1,
        name: "inner iterations",
        nameLocation: "middle",
        nameGap: 40,
        nameTextStyle: axisName,
        min: 0,
        minInterval: 1,
        axisLine: { show: true },
        axisTick: { show: true },
        axisLabel: { fontSize: 11, color: "#333" },
        splitLine,
      },
    ],
    series: [
      {
        name: SERIES.finalLoss,
        type: "line",
        xAxisIndex: 0,
        yAxisIndex: 0,
        data: input.finalLoss.map(logValue),
        connectNulls: false,
        symbol: "circle",
        symbolSize: 5,
        lineStyle: { width: 2.2, color: COLORS.finalLoss },
        itemStyle: { color: COLORS.finalLoss },
        z: 4,
      },
      {
        name: SERIES.firstLoss,
        type: "line",
        xAxisIndex: 0,
        yAxisIndex: 0,
        data: input.firstLoss.map(logValue),
        connectNulls: false,
        symbol: "triangle",
        symbolSize: 5,
        lineStyle: { width: 1.6, color: COLORS.firstLoss },
        itemStyle: { color: COLORS.firstLoss },
        z: 3,
      },
      {
        name: SERIES.threshold,
        type: "line",
        xAxisIndex: 0,
        yAxisIndex: 0,
        data: input.threshold.map(logValue),
        connectNulls: false,
        symbol: "none",
        lineStyle: { width: 1.8, type: [7, 5], color: COLORS.threshold },
        itemStyle: { color: COLORS.threshold },
        z: 2,
      },
      {
        name: SERIES.itersReached,
        type: "bar",
        xAxisIndex: 1,
        yAxisIndex: 1,
        stack: "iterations",
        barCategoryGap: "25%",
        data: iters.map((v, i) => (reached[i] ? v : null)),
        itemStyle: { color: COLORS.itersReached },
      },
      {
        name: SERIES.itersNotReached,
        type: "bar",
        xAxisIndex: 1,
        yAxisIndex: 1,
        stack: "iterations",
        barCategoryGap: "25%",
        data: iters.map((v, i) => (reached[i] ? null : v)),
        itemStyle: { color: COLORS.itersNotReached },
      },
    ],
  };
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** One step's numbers, used as the hover tooltip (SVG <title>) of its bar and its points. */
function stepTooltip(input: LossPlotInput, i: number): string {
  return (
    `step ${i} · timestep t=${input.timesteps[i]}\n` +
    `final loss ${formatLoss(input.finalLoss[i])} · first loss ${formatLoss(input.firstLoss[i])}\n` +
    `threshold ${formatLoss(input.threshold[i])} · ${input.innerIterations[i]} inner iterations`
  );
}

/**
 * Adds an SVG <title>/<desc> to the document and a <title> (shown as a tooltip by browsers and image viewers)
 * to each data point and bar. ECharts' SSR output tags those elements with `ecmeta_ssr_type="chart"` and
 * `ecmeta_data_index`; other elements are left as they are.
 */
function annotate(svg: string, input: LossPlotInput): string {
  const withTips = svg.replace(
    /(<path\b[^>]*\becmeta_data_index="(\d+)"[^>]*\becmeta_ssr_type="chart"[^>]*>)(<\/path>)/g,
    (_m, open: string, index: string, close: string) => {
      const i = Number(index);
      return i < input.timesteps.length ? `${open}<title>${escapeXml(stepTooltip(input, i))}</title>${close}` : _m;
    },
  );
  const header =
    `<title>${escapeXml(input.title)}</title>` +
    `<desc>${escapeXml(`Null-text optimisation loss per step (log scale) with the early-stop threshold, and inner iterations per step; ${input.timesteps.length} steps.`)}</desc>`;
  return withTips.replace(/<svg\b[^>]*>/, (root) => `${root}\n${header}`); // a function: no `$` patterns in the title
}

/** Renders the loss plot as a standalone SVG document (white background, `PLOT_WIDTH` x `PLOT_HEIGHT`). */
export async function renderLossPlotSvg(input: LossPlotInput): Promise<string> {
  const n = validate(input);
  const chart = echarts.init(null, null, { renderer: "svg", ssr: true, width: PLOT_WIDTH, height: PLOT_HEIGHT });
  try {
    chart.setOption(buildOption(input, n));
    const svg = annotate(chart.renderToSVGString(), input);
    return `<?xml version="1.0" encoding="UTF-8"?>\n${svg}\n`;
  } finally {
    chart.dispose();
  }
}

/** Rasterises an SVG string to PNG bytes at `scale` times its size. */
async function svgToPng(svg: string, scale = PNG_SCALE): Promise<Buffer> {
  return sharp(Buffer.from(svg, "utf8"), { density: 72 * scale })
    .flatten({ background: "#ffffff" })
    .png({ compressionLevel: 9 })
    .toBuffer();
}

/**
 * Whether librsvg finds a real font for the plot's text. Without one (no fontconfig fonts, e.g. a bare container)
 * text renders as "tofu" boxes of equal width, so narrow and wide glyphs come out the same width. The CLI can
 * warn with this; on Debian/Ubuntu `apt-get install fonts-dejavu-core` fixes it.
 */
export async function plotFontsAvailable(): Promise<boolean> {
  const inkWidth = async (text: string): Promise<number> => {
    const svg =
      `<svg xmlns="http://www.w3.org/2000/svg" width="480" height="48"><rect width="480" height="48" fill="#fff"/>` +
      `<text x="8" y="32" style="font-size:24px;font-family:${FONT_FAMILY}" fill="#000">${text}</text></svg>`;
    const { info } = await sharp(Buffer.from(svg)).trim({ background: "#ffffff" }).toBuffer({ resolveWithObject: true });
    return info.width;
  };
  try {
    const [narrow, wide] = await Promise.all([inkWidth("iiiiiiiiii"), inkWidth("WWWWWWWWWW")]);
    return wide > 2 * narrow;
  } catch {
    return false; // nothing drawn at all: trim has nothing to keep
  }
}

/** `<name>.svg` beside `<name>.png` (or beside `<name>` when the path has no .png extension). */
export function svgPathFor(pngPath: string): string {
  return /\.png$/i.test(pngPath) ? pngPath.replace(/\.png$/i, ".svg") : `${pngPath}.svg`;
}

/**
 * Renders the plot and writes `<name>.svg` and `<name>.png` (the PNG at `PNG_SCALE` x), each atomically,
 * both or neither.
 * The folder must exist. Returns the absolute paths written.
 */
export async function writeLossPlot(input: LossPlotInput, pngPath: string): Promise<{ png: string; svg: string }> {
  const png = path.resolve(pngPath);
  const svg = path.resolve(svgPathFor(pngPath));
  const svgText = await renderLossPlotSvg(input);
  const pngBytes = await svgToPng(svgText);
  await writeAll([
    [svg, svgText],
    [png, pngBytes],
  ]); // both or neither
  return { png, svg };
}
