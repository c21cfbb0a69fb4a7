/**
 * The inversion panel's UI: progress while the engine runs, then source | DDIM only | reconstruction
 * with PSNR, and the per-step losses. Messages follow src/shared/protocol.ts.
 */
import type { HostToWebview, PanelStep } from "../src/shared/protocol";
import "./style.css";

declare function acquireVsCodeApi(): { postMessage(message: unknown): void };

const vscode = acquireVsCodeApi();
const app = document.getElementById("app")!;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, className?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const fmtDb = (x: number | null) => (x === null ? "" : Number.isFinite(x) ? `${x.toFixed(2)} dB` : "identical");

function stepTable(steps: PanelStep[]): HTMLTableElement {
  const table = el("table");
  const head = el("tr");
  for (const h of ["step", "timestep", "first loss", "final loss", "threshold", "iterations"]) head.append(el("th", h));
  table.append(head);
  steps.forEach((s, i) => {
    const row = el("tr");
    const cells = [String(i), String(s.timestep), s.losses[0].toExponential(2), s.losses[s.losses.length - 1].toExponential(2), s.threshold.toExponential(2), String(s.losses.length)];
    for (const c of cells) row.append(el("td", c));
    table.append(row);
  });
  return table;
}

let progressBar: HTMLProgressElement | undefined;
let status: HTMLElement | undefined;

window.addEventListener("message", (event: MessageEvent<HostToWebview>) => {
  const m = event.data;
  switch (m.type) {
    case "started": {
      app.replaceChildren(el("h1", `${m.image}: "${m.prompt}"`));
      progressBar = el("progress");
      status = el("div", "starting…", "status");
      app.append(progressBar, status);
      break;
    }
    case "progress": {
      if (progressBar && status) {
        progressBar.max = m.total;
        progressBar.value = m.step;
        const loss = m.record ? `, loss ${m.record.losses[m.record.losses.length - 1].toExponential(2)} after ${m.record.losses.length} iterations` : "";
        status.textContent = `${m.phase} ${m.step}/${m.total}${m.timestep !== undefined ? ` (t=${m.timestep})` : ""}${loss}`;
      }
      break;
    }
    case "result": {
      app.replaceChildren(el("h1", `"${m.prompt}"`));
      app.append(el("div", `${m.seconds.toFixed(1)} s, ${m.unetForward} UNet forward + ${m.unetBackward} backward passes`, "status"));
      const grid = el("div", undefined, "grid");
      for (const image of m.images) {
        const figure = el("figure");
        const img = el("img");
        img.src = image.uri;
        img.alt = image.label;
        const caption = el("figcaption", image.label);
        if (image.psnr !== null || image.label !== "source") caption.append(el("div", fmtDb(image.psnr), "psnr"));
        figure.append(img, caption);
        grid.append(figure);
      }
      app.append(grid);
      for (const note of m.notes) app.append(el("div", `note: ${note}`, "status"));
      if (m.steps.length) app.append(stepTable(m.steps));
      break;
    }
    case "failed": {
      app.append(el("div", m.message, "status error"));
      progressBar?.remove();
      break;
    }
  }
});

vscode.postMessage({ type: "ready" });
