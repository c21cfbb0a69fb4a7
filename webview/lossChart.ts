/**
 * The per-timestep loss plot, drawn with ECharts: final inner loss per step (log scale) with the early-stop
 * threshold as a dashed line, and inner iterations per step as bars below, one colour for steps that reached
 * the threshold and one for steps that used every iteration (both in the legend). Grows one point per
 * finished step. Every colour is a VS Code theme variable, read again when the theme changes.
 */
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { SVGRenderer } from "echarts/renderers";
import type { PanelStep } from "../src/shared/protocol";

echarts.use([LineChart, BarChart, GridComponent, LegendComponent, TooltipComponent, SVGRenderer]);

function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

export class LossChart {
  private readonly chart: echarts.ECharts;
  private steps: PanelStep[] = [];

  constructor(readonly element: HTMLElement) {
    this.chart = echarts.init(element, undefined, { renderer: "svg" });
    new ResizeObserver(() => {
      this.chart.resize();
      this.render();
    }).observe(element);
    // VS Code switches themes by changing the body's class and the root's CSS variables
    const themeChanged = new MutationObserver(() => this.render());
    themeChanged.observe(document.body, { attributes: true, attributeFilter: ["class", "data-vscode-theme-kind"] });
    themeChanged.observe(document.documentElement, { attributes: true, attributeFilter: ["style", "class"] });
    this.render();
  }

  /** The text colour the chart was last drawn with (for the theme tests). */
  textColour = "";

  /** Number of points drawn (one per finished step). */
  get points(): number {
    return this.steps.length;
  }

  reset(): void {
    this.steps = [];
    this.render();
  }

  add(step: PanelStep): void {
    this.steps.push(step);
    this.render();
  }

  set(steps: PanelStep[]): void {
    this.steps = [...steps];
    this.render();
  }

  private render(): void {
    const fg = cssVar("--vscode-foreground", "#333");
    const muted = cssVar("--vscode-descriptionForeground", "#777");
    const grid = cssVar("--vscode-panel-border", "#ccc");
    const colours = {
      loss: cssVar("--vscode-charts-blue", "#3794ff"),
      threshold: cssVar("--vscode-charts-foreground", fg),
      reached: cssVar("--vscode-charts-green", "#89d185"),
      capped: cssVar("--vscode-charts-orange", "#d18616"),
    };
    this.textColour = fg;
    const narrow = this.element.clientWidth > 0 && this.element.clientWidth < 600;
    const labels = this.steps.map((s, i) => `${i} (t=${s.timestep})`);
    const axisCommon = { axisLabel: { color: muted }, axisLine: { lineStyle: { color: grid } }, splitLine: { lineStyle: { color: grid, opacity: 0.4 } } };
    const final = (s: PanelStep) => s.losses[s.losses.length - 1];
    const reached = (s: PanelStep) => final(s) < s.threshold;
    const names = { loss: "final loss", threshold: "early-stop threshold", reached: "iterations (stopped at the threshold)", capped: "iterations (all used)" };
    this.chart.setOption(
      {
        animation: false,
        color: [colours.loss, colours.threshold, colours.reached, colours.capped],
        textStyle: { color: fg },
        legend: { top: 0, left: 0, type: "scroll", textStyle: { color: fg }, pageTextStyle: { color: fg }, data: Object.values(names) },
        tooltip: { trigger: "axis" },
        grid: [
          { left: 64, right: 16, top: narrow ? 56 : 40, height: "46%" },
          { left: 64, right: 16, top: "74%", bottom: 28 },
        ],
        xAxis: [
          { type: "category", data: labels, gridIndex: 0, axisLabel: { show: false }, ...{ axisLine: axisCommon.axisLine } },
          {
            type: "category",
            data: labels,
            gridIndex: 1,
            name: "step (timestep)",
            nameLocation: "middle",
            nameGap: 20,
            nameTextStyle: { color: fg },
            ...axisCommon,
          },
        ],
        yAxis: [
          { type: "log", gridIndex: 0, name: "loss (MSE)", nameLocation: "middle", nameGap: 48, nameTextStyle: { color: fg }, ...axisCommon },
          { type: "value", gridIndex: 1, name: "iterations", nameLocation: "middle", nameGap: 48, nameTextStyle: { color: fg }, minInterval: 1, ...axisCommon },
        ],
        series: [
          {
            name: names.loss,
            type: "line",
            xAxisIndex: 0,
            yAxisIndex: 0,
            showSymbol: true,
            symbolSize: 4,
            itemStyle: { color: colours.loss },
            lineStyle: { color: colours.loss },
            data: this.steps.map(final),
          },
          {
            name: names.threshold,
            type: "line",
            xAxisIndex: 0,
            yAxisIndex: 0,
            showSymbol: false,
            itemStyle: { color: colours.threshold },
            lineStyle: { type: "dashed", color: colours.threshold },
            data: this.steps.map((s) => s.threshold),
          },
          {
            name: names.reached,
            type: "bar",
            stack: "iterations",
            xAxisIndex: 1,
            yAxisIndex: 1,
            itemStyle: { color: colours.reached },
            data: this.steps.map((s) => (reached(s) ? s.losses.length : 0)),
          },
          {
            name: names.capped,
            type: "bar",
            stack: "iterations",
            xAxisIndex: 1,
            yAxisIndex: 1,
            itemStyle: { color: colours.capped },
            data: this.steps.map((s) => (reached(s) ? 0 : s.losses.length)),
          },
        ],
      },
      { notMerge: true },
    );
  }
}
