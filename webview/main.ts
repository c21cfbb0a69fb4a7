/**
 * The inversion panel: source | DDIM only | reconstruction with PSNR, the live per-timestep loss plot, the
 * cross-attention viewer, the edit form and the history of edits (each with its "what changed" heatmap).
 * State arrives as typed messages (src/shared/protocol.ts); the panel posts only typed requests back, and
 * keeps the artifact's restore key in its webview state so a window reload brings it back.
 */
import "@vscode-elements/elements/dist/vscode-button/index.js";
import "@vscode-elements/elements/dist/vscode-progress-bar/index.js";
import { HostToWebview, PanelEdit, PanelImage, POOR_EDIT_OUTSIDE_CHANGE, POOR_RECONSTRUCTION_DB, WebviewToHost } from "../src/shared/protocol";
import { AttentionView } from "./attentionView";
import { EditForm } from "./editForm";
import { LossChart } from "./lossChart";
import "./style.css";

declare function acquireVsCodeApi(): { postMessage(message: unknown): void; setState(state: unknown): void };

const vscode = acquireVsCodeApi();
const post = (message: WebviewToHost) => vscode.postMessage(message);

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, className?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function button(text: string, onClick: () => void, secondary = true): HTMLElement {
  const b = document.createElement("vscode-button");
  b.textContent = text;
  if (secondary) b.setAttribute("secondary", "");
  b.addEventListener("click", onClick);
  return b;
}

const fmtDb = (x: number | null) => (x === null ? "" : Number.isFinite(x) ? `PSNR ${x.toFixed(2)} dB` : "identical");
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

// ---- layout -----------------------------------------------------------------------------------------
const app = document.getElementById("app")!;
const title = el("h1", "Null-text Inversion");
const status = el("div", "Waiting for an inversion…", "status");
status.setAttribute("role", "status");
status.setAttribute("aria-live", "polite");
const progress = document.createElement("vscode-progress-bar") as HTMLElement & { value: number; max: number };
progress.setAttribute("aria-label", "progress of the running job");
progress.hidden = true;
const cancel = button("Cancel", () => post({ type: "cancel" }));
cancel.hidden = true;
const reveal = button("Reveal artifact", () => post({ type: "reveal" }));
reveal.hidden = true;
const head = el("div", undefined, "head");
head.append(status, cancel, reveal);

// zoom: fit (a 192 px box), or whole multiples of the image's own pixels
const zoom = el("div", undefined, "zoom");
zoom.setAttribute("role", "radiogroup");
zoom.setAttribute("aria-label", "image zoom");
const ZOOMS: [string, string][] = [
  ["fit", "Fit"],
  ["1", "1:1"],
  ["4", "4x"],
  ["8", "8x"],
];
let zoomLevel = "fit";
for (const [value, label] of ZOOMS) {
  const b = el("button", label, "chip");
  b.type = "button";
  b.dataset.zoom = value;
  b.setAttribute("role", "radio");
  b.addEventListener("click", () => setZoom(value));
  zoom.append(b);
}
function setZoom(value: string): void {
  zoomLevel = value;
  for (const b of zoom.querySelectorAll<HTMLButtonElement>("button")) b.setAttribute("aria-checked", String(b.dataset.zoom === value));
  for (const img of document.querySelectorAll<HTMLImageElement>("figure img")) sizeImage(img);
}
function sizeImage(img: HTMLImageElement): void {
  const side = img.naturalWidth || 64;
  const px = zoomLevel === "fit" ? 192 : side * Number(zoomLevel);
  img.style.width = img.style.height = `${px}px`;
}

const quality = el("div", undefined, "status warning");
quality.hidden = true;
const grid = el("div", undefined, "grid");
const notes = el("div", undefined, "notes");
const plotTitle = el("h2", "Null-text optimisation: per timestep");
const plotNote = el(
  "div",
  "Loss: the mean squared error between the guided DDIM step and the pivot latent of DDIM inversion, after each timestep's inner optimisation of the null embedding.",
  "status",
);
const plot = el("div", undefined, "plot");
plot.setAttribute("role", "img");
plot.setAttribute("aria-label", "loss per timestep and inner iterations per timestep");
const plotSection = el("section", undefined, "loss");
plotSection.append(plotTitle, plotNote, plot);
// compare: any two images, one over the other, split by a slider
const compareSection = el("section", undefined, "compare");
const compareTitle = el("h2", "Compare");
const compareHint = el("div", "Pick two images with their Compare buttons; drag the slider (or use the arrow keys on it) to wipe between them.", "status");
const compareView = el("div", undefined, "compare-view");
compareView.setAttribute("role", "img");
const compareBase = el("img");
const compareTop = el("img", undefined, "compare-top");
compareBase.alt = "";
compareTop.alt = "";
compareView.append(compareBase, compareTop);
const compareSlider = el("input");
compareSlider.type = "range";
compareSlider.min = "0";
compareSlider.max = "100";
compareSlider.value = "50";
compareSlider.setAttribute("aria-label", "wipe position between the two compared images");
const compareCaption = el("div", "", "status");
compareSection.append(compareTitle, compareHint, compareView, compareSlider, compareCaption);
compareSection.hidden = true;
let compared: PanelImage[] = [];
function wipe(): void {
  // through the CSSOM, which the panel's CSP allows (no inline styles)
  compareTop.style.clipPath = `inset(0 ${100 - Number(compareSlider.value)}% 0 0)`;
}
compareSlider.addEventListener("input", wipe);
function compare(image: PanelImage): void {
  compared = [...compared.filter((i) => i.id !== image.id), image].slice(-2);
  for (const b of document.querySelectorAll<HTMLElement>("figure [data-compare]"))
    b.setAttribute("aria-pressed", String(compared.some((i) => i.id === b.dataset.compare)));
  compareSection.hidden = compared.length < 2;
  if (compared.length < 2) return;
  const [left, right] = compared;
  compareTop.src = left.uri;
  compareBase.src = right.uri;
  compareView.setAttribute("aria-label", `${left.label} (left of the slider) over ${right.label} (right)`);
  compareCaption.textContent = `left of the slider: ${left.label} · right: ${right.label}`;
  wipe();
}

const historyTitle = el("h2", "Edits");
const history = el("ol", undefined, "history");
const historySection = el("section", undefined, "edits");
historySection.append(historyTitle, history);
const attention = new AttentionView();
const form = new EditForm((request) => post({ type: "edit", request }));
const lower = el("div", undefined, "lower");
lower.append(attention.element, form.element);
app.append(title, head, progress, zoom, quality, grid, notes, compareSection, historySection, lower, plotSection);
const chart = new LossChart(plot);
plotSection.hidden = true;
historySection.hidden = true;
lower.hidden = true;
setZoom("fit");

// ---- state ------------------------------------------------------------------------------------------
let sourcePrompt = "";
let sourceUri = "";

function reportRendered(): void {
  post({
    type: "rendered",
    images: document.querySelectorAll("figure").length,
    lossPoints: chart.points,
    attentionWords: document.querySelectorAll(".word").length,
  });
}

function figure(image: PanelImage, extra?: string): HTMLElement {
  const f = el("figure");
  f.dataset.id = image.id;
  const img = el("img");
  img.src = image.uri;
  img.alt = image.label;
  img.addEventListener("load", () => {
    sizeImage(img);
    size.textContent = `${img.naturalWidth}×${img.naturalHeight} px`;
  });
  const caption = el("figcaption", image.label);
  const size = el("div", "\u00a0", "psnr"); // a line kept for the size, so nothing below moves when it loads
  caption.append(el("div", fmtDb(image.psnr), "psnr"), size);
  if (extra) caption.append(el("div", extra, "psnr"));
  f.append(img, caption);
  const actions = el("div", undefined, "buttons");
  const pick = button("Compare", () => compare(image));
  pick.dataset.compare = image.id;
  actions.append(pick);
  if (image.savable) actions.append(button("Save as PNG…", () => post({ type: "saveImage", id: image.id })));
  f.append(actions);
  return f;
}

function setBusy(busy: boolean, what = ""): void {
  progress.hidden = !busy;
  cancel.hidden = !busy;
  form.setBusy(busy);
  if (busy && what) status.textContent = what;
}

/** Everything of a previous inversion goes: a new run never shows or acts on the old artifact. */
function clearInversion(): void {
  compared = [];
  compareSection.hidden = true;
  grid.replaceChildren();
  notes.replaceChildren();
  history.replaceChildren();
  historySection.hidden = true;
  quality.hidden = true;
  chart.reset();
  plotSection.hidden = true;
  attention.clear();
  form.reset("");
  lower.hidden = true;
  reveal.hidden = true;
}

function addEdit(edit: PanelEdit): void {
  historySection.hidden = false;
  const item = el("li", undefined, "edit");
  const s = edit.changeSummary;
  const changed = s ? `${pct(s.changedShare)} of pixels changed` : "";
  const outside = s?.meanChangeOutsideMask;
  const row = el("div", undefined, "grid");
  row.append(figure(edit.image, edit.mode));
  if (edit.change) row.append(figure(edit.change, changed));
  const params = `${edit.mode} · cross ${edit.cross} · self ${edit.self}${edit.blendUsed ? ` · blend "${edit.blendUsed}" at ${edit.blendThreshold}` : " · no blend"} · ${edit.editNull} null in the edit${edit.reweight ? ` · reweight ${edit.reweight}` : ""}`;
  const actions = el("div", undefined, "buttons");
  actions.append(button("Edit again from this", () => form.fill(edit)));
  item.append(el("div", `"${edit.prompt}"`, "edit-prompt"), el("div", params, "status"), row, actions);
  if (outside !== null && outside !== undefined && outside > POOR_EDIT_OUTSIDE_CHANGE) {
    item.append(
      el(
        "div",
        `The edit changed the image outside its blend mask by ${pct(outside)} on average (above ${pct(POOR_EDIT_OUTSIDE_CHANGE)}): it did not keep the rest. Try a lower cross-attention fraction or a blend word.`,
        "status warning",
      ),
    );
  }
  history.append(item);
}

window.addEventListener("message", (event: MessageEvent<HostToWebview>) => {
  const m = event.data;
  switch (m.type) {
    case "session": {
      sourcePrompt = m.prompt;
      title.textContent = m.title;
      status.textContent = `"${m.prompt}" · ${m.method}${m.totalSteps ? ` · ${m.totalSteps} steps` : ""}`;
      clearInversion();
      plotSection.hidden = !m.running || !m.lossTrace;
      form.setAttentionControl(m.attentionControl, m.method);
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
      grid.replaceChildren(...m.images.map((i) => figure(i)));
      notes.replaceChildren(...m.notes.map((n) => el("div", `note: ${n}`, "status")));
      status.textContent = `"${sourcePrompt}"${m.seconds !== null ? ` · ${m.seconds.toFixed(1)} s` : ""}${m.provider ? ` on ${m.provider}` : ""} · ${m.unetForward} UNet forward + ${m.unetBackward} backward passes`;
      plotSection.hidden = m.steps.length === 0;
      chart.set(m.steps);
      reveal.hidden = false;
      const rec = m.images.find((i) => i.id === "reconstruction");
      const poor = rec && rec.psnr !== null && rec.psnr < POOR_RECONSTRUCTION_DB;
      quality.hidden = !poor;
      if (poor)
        quality.textContent = `Poor reconstruction: PSNR ${rec.psnr!.toFixed(2)} dB, below ${POOR_RECONSTRUCTION_DB} dB. Edits start from this reconstruction; check that the prompt describes the image and that the model knows such images.`;
      const source = m.images.find((i) => i.id === "source");
      sourceUri = source?.uri ?? "";
      if (source) {
        attention.setImage(source.uri);
        form.setSource(source.uri, sourcePrompt);
      }
      if (m.attention) attention.setAttention(m.attention, "the source");
      history.replaceChildren();
      historySection.hidden = true;
      for (const edit of m.history) addEdit(edit);
      lower.hidden = !m.editable && !m.attention;
      form.element.hidden = !m.editable;
      attention.element.hidden = !m.attention;
      if (m.restoreKey) vscode.setState({ restoreKey: m.restoreKey });
      reportRendered();
      break;
    }
    case "edited": {
      setBusy(false);
      form.showError("");
      addEdit(m.edit);
      status.textContent = `${m.edit.mode} edit in ${m.seconds.toFixed(1)} s on ${m.provider}`;
      for (const n of m.notes) notes.append(el("div", `note: ${n}`, "status"));
      if (m.attention) {
        attention.setImage(m.edit.image.uri);
        attention.setAttention(m.attention, `the edit "${m.edit.prompt}"`);
        attention.element.hidden = false;
      }
      reportRendered();
      break;
    }
    case "busy":
      setBusy(m.busy, m.what);
      break;
    case "failed":
      setBusy(false);
      if (m.scope === "run") clearInversion();
      else form.showError(m.message);
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
  chartTextColour: () => chart.textColour,
  sourceUri: () => sourceUri,
};

post({ type: "ready" });
