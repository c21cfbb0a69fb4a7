/**
 * The inversion panel: source | DDIM only | reconstruction | edits with PSNR, the live per-timestep loss
 * plot, the cross-attention viewer and the edit form. State arrives as typed messages
 * (src/shared/protocol.ts); the panel posts only typed requests back.
 */
import "@vscode-elements/elements/dist/vscode-button/index.js";
import "@vscode-elements/elements/dist/vscode-progress-bar/index.js";
import type { HostToWebview, PanelImage, WebviewToHost } from "../src/shared/protocol";
import { AttentionView } from "./attentionView";
import { EditForm } from "./editForm";
import { LossChart } from "./lossChart";
import "./style.css";

declare function acquireVsCodeApi(): { postMessage(message: unknown): void };

const vscode = acquireVsCodeApi();
const post = (message: WebviewToHost) => vscode.postMessage(message);

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, className?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const fmtDb = (x: number | null) => (x === null ? "" : Number.isFinite(x) ? `PSNR ${x.toFixed(2)} dB` : "identical");

// ---- layout -----------------------------------------------------------------------------------------
const app = document.getElementById("app")!;
const title = el("h1", "Null-text Inversion");
const status = el("div", "Waiting for an inversion…", "status");
const progress = document.createElement("vscode-progress-bar") as HTMLElement & { value: number; max: number };
progress.hidden = true;
const cancel = document.createElement("vscode-button");
cancel.textContent = "Cancel";
cancel.setAttribute("secondary", "");
cancel.hidden = true;
cancel.addEventListener("click", () => post({ type: "cancel" }));
const reveal = document.createElement("vscode-button");
reveal.textContent = "Reveal artifact";
reveal.setAttribute("secondary", "");
reveal.hidden = true;
reveal.addEventListener("click", () => post({ type: "reveal" }));
const head = el("div", undefined, "head");
head.append(status, cancel, reveal);
const grid = el("div", undefined, "grid");
const plotTitle = el("h2", "Null-text optimisation: loss per timestep");
const plot = el("div", undefined, "plot");
const plotSection = el("section", undefined, "loss");
plotSection.append(plotTitle, plot);
const notes = el("div", undefined, "notes");
const attention = new AttentionView();
const form = new EditForm((request) => post({ type: "edit", request }));
const lower = el("div", undefined, "lower");
lower.append(attention.element, form.element);
app.append(title, head, progress, grid, notes, plotSection, lower);
const chart = new LossChart(plot);
plotSection.hidden = true;
lower.hidden = true;

// ---- state ------------------------------------------------------------------------------------------
let sourcePrompt = "";

function reportRendered(): void {
  post({ type: "rendered", images: grid.querySelectorAll("figure").length, lossPoints: chart.points, attentionWords: document.querySelectorAll(".word").length });
}

function figure(image: PanelImage): HTMLElement {
  const f = el("figure");
  f.dataset.id = image.id;
  const img = el("img");
  img.src = image.uri;
  img.alt = image.label;
  const caption = el("figcaption", image.label);
  caption.append(el("div", fmtDb(image.psnr), "psnr"));
  f.append(img, caption);
  if (image.savable) {
    const save = document.createElement("vscode-button");
    save.textContent = "Save as PNG…";
    save.setAttribute("secondary", "");
    save.addEventListener("click", () => post({ type: "saveImage", id: image.id }));
    f.append(save);
  }
  return f;
}

function setBusy(busy: boolean, what = ""): void {
  progress.hidden = !busy;
  cancel.hidden = !busy;
  form.setBusy(busy);
  if (busy && what) status.textContent = what;
}

window.addEventListener("message", (event: MessageEvent<HostToWebview>) => {
  const m = event.data;
  switch (m.type) {
    case "session": {
      sourcePrompt = m.prompt;
      title.textContent = m.title;
      status.textContent = `"${m.prompt}" · ${m.method}${m.totalSteps ? ` · ${m.totalSteps} steps` : ""}`;
      grid.replaceChildren();
      notes.replaceChildren();
      chart.reset();
      plotSection.hidden = m.method !== "null-text";
      lower.hidden = true;
      setBusy(m.running, m.running ? "Starting…" : "");
      break;
    }
    case "progress": {
      progress.max = m.total;
      progress.value = m.step;
      const loss = m.record ? `, loss ${m.record.losses[m.record.losses.length - 1].toExponential(2)} after ${m.record.losses.length} iterations` : "";
      status.textContent = `${m.phase} ${m.step}/${m.total}${m.timestep !== undefined ? ` (t=${m.timestep})` : ""}${loss}`;
      if (m.record) {
        plotSection.hidden = false;
        chart.add(m.record);
      }
      break;
    }
    case "inverted": {
      setBusy(false);
      grid.replaceChildren(...m.images.map(figure));
      notes.replaceChildren(...m.notes.map((n) => el("div", `note: ${n}`, "status")));
      status.textContent = `"${sourcePrompt}"${m.seconds !== null ? ` · ${m.seconds.toFixed(1)} s` : ""} · ${m.unetForward} UNet forward + ${m.unetBackward} backward passes`;
      if (m.steps.length) {
        plotSection.hidden = false;
        chart.set(m.steps);
      }
      reveal.hidden = false;
      const source = m.images.find((i) => i.id === "source");
      if (source) {
        attention.setImage(source.uri);
        form.setSource(source.uri, sourcePrompt);
      }
      if (m.attention) attention.setAttention(m.attention);
      lower.hidden = !m.editable && !m.attention;
      form.element.hidden = !m.editable;
      reportRendered();
      break;
    }
    case "edited": {
      setBusy(false);
      grid.append(figure(m.image));
      status.textContent = `${m.mode} edit in ${m.seconds.toFixed(1)} s`;
      for (const n of m.notes) notes.append(el("div", `note: ${n}`, "status"));
      if (m.attention) attention.setAttention(m.attention);
      reportRendered();
      break;
    }
    case "busy":
      setBusy(m.busy, m.what);
      break;
    case "failed":
      setBusy(false);
      form.showError(m.message);
      status.textContent = m.message;
      status.classList.add("error");
      setTimeout(() => status.classList.remove("error"), 4000);
      break;
  }
});

/** Read-only facts for the webview tests (the panel itself never reads them). */
(window as unknown as { ntiPanel: object }).ntiPanel = {
  lossPoints: () => chart.points,
  attentionWord: () => attention.shown?.token ?? null,
};

post({ type: "ready" });
