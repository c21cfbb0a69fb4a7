/**
 * The per-timestep loss plot, drawn with ECharts: final inner loss per step (log scale) with the early-stop
 * threshold as a dashed line, and inner iterations per step as bars below. Grows one point per finished step.
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
    new ResizeObserver(() => this.chart.resize()).observe(element);
    this.render();
  }

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
    const labels = this.steps.map((s, i) => `${i} (t=${s.timestep})`);
    const axisCommon = { axisLabel: { color: muted }, axisLine: { lineStyle: { color: grid } }, splitLine: { lineStyle: { color: grid, opacity: 0.4 } } };
    this.chart.setOption(
      {
        animation: false,
        textStyle: { color: fg },
        legend: { top: 0, textStyle: { color: fg }, data: ["final loss", "early-stop threshold", "inner iterations"] },
        tooltip: { trigger: "axis" },
        grid: [
          { left: 64, right: 16, top: 32, height: "52%" },
          { left: 64, right: 16, top: "72%", bottom: 28 },
        ],
        xAxis: [
          { type: "category", data: labels, gridIndex: 0, axisLabel: { show: false }, ...{ axisLine: axisCommon.axisLine } },
          { type: "category", data: labels, gridIndex: 1, name: "step (timestep)", nameLocation: "middle", nameGap: 20, ...axisCommon },
        ],
        yAxis: [
          { type: "log", gridIndex: 0, name: "loss", ...axisCommon },
          { type: "value", gridIndex: 1, name: "iterations", minInterval: 1, ...axisCommon },
        ],
        series: [
          { name: "final loss", type: "line", xAxisIndex: 0, yAxisIndex: 0, showSymbol: true, symbolSize: 4, data: this.steps.map((s) => s.losses[s.losses.length - 1]) },
          { name: "early-stop threshold", type: "line", xAxisIndex: 0, yAxisIndex: 0, showSymbol: false, lineStyle: { type: "dashed" }, data: this.steps.map((s) => s.threshold) },
          {
            name: "inner iterations",
            type: "bar",
            xAxisIndex: 1,
            yAxisIndex: 1,
            data: this.steps.map((s) => ({
              value: s.losses.length,
              itemStyle: { color: s.losses[s.losses.length - 1] < s.threshold ? "#2ca02c" : "#d62728" },
            })),
          },
        ],
      },
      { notMerge: true },
    );
  }
}
