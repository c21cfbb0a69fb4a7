/**
 * One inversion shown in a webview: a panel opened by a command run, the custom editor of a `.nti` file,
 * or a panel restored after a window reload. It streams progress and results to the webview, lists the
 * edits saved beside the artifact, runs the edits the webview asks for through the engine worker, and saves
 * an edit into the workspace on request. Scripts only from dist/ with a nonce; images only from the output
 * folder (and data URIs for images read from an artifact).
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import * as vscode from "vscode";
import type { EngineClient } from "../core/engineClient";
import type { Progress } from "../core/inversion";
import type { OpenModelOptions } from "../core/model";
import type { KnownModel } from "../core/modelList";
import type { AttentionData, EditRecord } from "../core/output";
import { METHOD_INFO } from "../core/settings";
import type { EditSummary, InvertSummary } from "../core/workerProtocol";
import { panelHtml } from "./panelHtml";
import {
  HostToWebview,
  PanelAttention,
  PanelEdit,
  PanelImage,
  WebviewToHost,
  methodLabel,
  parseReweight,
  parseWebviewMessage,
  NO_BLEND,
  parseBlend,
} from "../shared/protocol";

export interface PanelHost {
  client(): EngineClient;
  /** The configured model folder (the setting, else the first bundled model). */
  modelFolder(): Promise<string>;
  /** How the worker opens the model: provider, GPU, CPU threads (the settings). */
  modelOptions(): OpenModelOptions;
  /** Every model the user has: the bundled ones and the configured one. */
  knownModels(): Promise<KnownModel[]>;
  log(line: string): void;
  /** Runs a job exclusively (one at a time), with a cancellable progress notification. */
  exclusive<T>(title: string, work: (signal: AbortSignal, report: (p: Progress) => void) => Promise<T>): Promise<T>;
  cancel(): void;
  /** Shows a file in the OS file manager where that works, else in the explorer. */
  reveal(file: string): Promise<void>;
}

export const PANEL_VIEW_TYPE = "nullText.inversion";
/** Largest attention JSON read back for the history (a 512 px SD edit's maps are a few MB). */
const MAX_RECORD_BYTES = 64 * 1024 * 1024;

export class InversionPanel {
  /** Every open panel, the newest last. */
  private static readonly open: InversionPanel[] = [];
  /** Files the webview may name (by id): only what this panel produced or found beside its artifact. */
  private readonly files = new Map<string, string>();
  private artifact: string | undefined;
  /** The model the shown artifact records (its id and nti.json hash), once read. */
  private madeWith: { id: string; manifestSha256: string } | undefined;
  private outDir: string | undefined;
  private edits = 0;
  private running = false;
  /** The original image and prompt, to offer a fresh inversion when the artifact no longer fits the model. */
  private origin: { image: string; prompt: string } | undefined;
  private ready: Promise<void>;
  /** Whether the webview's script has started (its "ready" message). */
  private webviewReady = false;
  /** The panel's own account of what it shows (its last "rendered" message). */
  rendered: { images: number; lossPoints: number; attentionWords: number } | undefined;

  constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly context: vscode.ExtensionContext,
    private readonly host: PanelHost,
    roots: vscode.Uri[],
  ) {
    let markReady: () => void = () => undefined;
    this.ready = new Promise((resolve) => (markReady = resolve));
    panel.webview.options = {
      enableScripts: true,
      localResourceRoots: [vscode.Uri.joinPath(context.extensionUri, "dist"), vscode.Uri.joinPath(context.extensionUri, "media"), ...roots],
    };
    panel.webview.html = html(panel.webview, context.extensionUri);
    panel.webview.onDidReceiveMessage((raw) => {
      const message = parseWebviewMessage(raw);
      if (!message) {
        host.log(`ignored a malformed message from the panel: ${JSON.stringify(raw).slice(0, 200)}`);
        return;
      }
      if (message.type === "ready") {
        this.webviewReady = true;
        markReady();
      } else if (message.type === "rendered")
        this.rendered = { images: message.images, lossPoints: message.lossPoints, attentionWords: message.attentionWords };
      else void this.handle(message);
    });
    InversionPanel.open.push(this);
    panel.onDidDispose(() => {
      const at = InversionPanel.open.indexOf(this);
      if (at >= 0) InversionPanel.open.splice(at, 1);
    });
  }

  /**
   * A panel for a new command run: a panel left by a run that failed or was cancelled (it shows no result)
   * is reused; a panel that shows an inversion is kept, and the run gets a new one.
   */
  static forRun(context: vscode.ExtensionContext, host: PanelHost, outDir: string, title: string): InversionPanel {
    const idle = InversionPanel.open.find((p) => !p.artifact && !p.running && p.panel.viewType === PANEL_VIEW_TYPE);
    if (idle) {
      idle.allow(outDir);
      idle.panel.title = title;
      idle.panel.reveal(undefined, true);
      return idle;
    }
    const panel = vscode.window.createWebviewPanel(
      PANEL_VIEW_TYPE,
      title,
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: true, retainContextWhenHidden: true },
    );
    return new InversionPanel(panel, context, host, [vscode.Uri.file(outDir)]);
  }

  static get count(): number {
    return InversionPanel.open.length;
  }

  /** The newest panel. */
  static get active(): InversionPanel | undefined {
    return InversionPanel.open[InversionPanel.open.length - 1];
  }

  /**
   * The newest panel on screen, else the newest. After a reload several panels come back, in no set
   * order, and a hidden one does not render until it is shown.
   */
  static get onScreen(): InversionPanel | undefined {
    return [...InversionPanel.open].reverse().find((p) => p.panel.visible) ?? InversionPanel.active;
  }

  /** Each open panel's state, oldest first (for the end-to-end tests' failure messages). */
  static states(): { visible: boolean; ready: boolean; artifact: string | undefined; rendered: boolean }[] {
    return InversionPanel.open.map((p) => ({ visible: p.panel.visible, ready: p.webviewReady, artifact: p.artifact, rendered: p.rendered !== undefined }));
  }

  /** The newest panel showing an artifact, if one is open. */
  static showing(artifact: string): InversionPanel | undefined {
    return [...InversionPanel.open].reverse().find((p) => p.artifact && path.resolve(p.artifact) === path.resolve(artifact));
  }

  async post(message: HostToWebview): Promise<void> {
    await this.ready;
    await this.panel.webview.postMessage(message);
  }

  /** A new run starts in this panel: nothing of what it showed before may be acted on. */
  startRun(session: Extract<HostToWebview, { type: "session" }>): void {
    this.artifact = undefined;
    this.madeWith = undefined;
    this.outDir = undefined;
    this.origin = undefined;
    this.files.clear();
    this.rendered = undefined;
    this.running = true;
    void this.post(session);
  }

  /** The run ended without a result (failed or cancelled). */
  endRun(message: string): void {
    this.running = false;
    void this.post({ type: "failed", message, scope: "run" });
  }

  progress(p: Progress): void {
    void this.post({ type: "progress", ...p });
  }

  /** Shows a finished inversion (from the worker). */
  showInversion(s: InvertSummary, outDir: string, image: string): void {
    this.running = false;
    this.origin = { image, prompt: s.prompt };
    this.artifact = s.artifact;
    this.madeWith = undefined;
    this.outDir = outDir;
    this.files.clear();
    this.panel.title = path.basename(s.artifact);
    const images: PanelImage[] = [this.image("source", "source", s.source, null, false)];
    if (s.ddimReconstruction) images.push(this.image("ddim", "DDIM only", s.ddimReconstruction, s.ddimPsnr, false));
    images.push(this.image("reconstruction", methodLabel(s.settings.method), s.reconstruction, s.psnr, false));
    void this.post({
      type: "inverted",
      images,
      steps: s.steps,
      seconds: s.seconds,
      provider: s.provider,
      unetForward: s.unetForward,
      unetBackward: s.unetBackward,
      notes: s.notes,
      attention: s.attention ? panelAttention(s.attention, 0) : null,
      editable: true,
      history: [],
      restoreKey: s.artifact,
    });
  }

  /**
   * Shows an artifact read from disk (the custom editor, or a panel restored after a reload): its images
   * and attention maps beside it when present, and every edit saved beside it.
   */
  async showArtifact(artifactPath: string): Promise<void> {
    const [{ readArtifact }, { encodePng }] = await Promise.all([import("../core/artifact"), import("../core/image")]); // loaded on first use: activation stays light
    const artifact = await readArtifact(artifactPath);
    const header = artifact.header;
    this.rendered = undefined;
    this.running = false;
    this.origin = { image: header.source.path, prompt: header.prompt };
    this.artifact = artifactPath;
    this.outDir = path.dirname(artifactPath);
    this.files.clear();
    const sourcePng = await encodePng(artifact.source, artifact.dims.imageSize);
    const stem = artifactPath.replace(/\.nti$/, "");
    this.madeWith = header.model;
    const method = methodLabel(header.settings.method);
    const images: PanelImage[] = [{ id: "source", label: "source", uri: `data:image/png;base64,${sourcePng.toString("base64")}`, psnr: null, savable: false }];
    if (await isFile(`${stem}.ddim.png`)) images.push(this.image("ddim", "DDIM only", `${stem}.ddim.png`, header.stats.ddimPsnr, false));
    if (await isFile(`${stem}.reconstruction.png`)) images.push(this.image("reconstruction", method, `${stem}.reconstruction.png`, header.stats.psnr, false));
    const attention = await readRecord(`${stem}.attention.json`);
    const history = await this.history(artifactPath);
    await this.post({
      type: "session",
      title: path.basename(artifactPath),
      prompt: header.prompt,
      method,
      lossTrace: header.steps.length > 0,
      attentionControl: METHOD_INFO[header.settings.method].promptToPrompt,
      totalSteps: header.settings.steps,
      running: false,
      editable: true,
    });
    await this.post({
      type: "inverted",
      images,
      steps: header.steps,
      seconds: header.stats.seconds,
      provider: null,
      unetForward: header.stats.unetForward,
      unetBackward: header.stats.unetBackward,
      notes: header.notes,
      attention: attention ? panelAttention(attention, 0) : null,
      editable: true,
      history,
      restoreKey: artifactPath,
    });
  }

  /** The edits saved beside an artifact (`<stem>.edit[-n].attention.json` naming it), oldest first. */
  private async history(artifactPath: string): Promise<PanelEdit[]> {
    const dir = path.dirname(artifactPath);
    const name = path.parse(artifactPath).name;
    const pattern = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.edit(-\\d+)?\\.attention\\.json$`);
    const records = (await fs.readdir(dir).catch(() => [] as string[])).filter((f) => pattern.test(f));
    const found: { mtime: number; edit: PanelEdit }[] = [];
    for (const file of records) {
      const full = path.join(dir, file);
      const data = await readRecord(full);
      const record = data?.edit;
      if (!data || !record || record.artifact !== path.basename(artifactPath)) continue;
      const stem = full.replace(/\.attention\.json$/, "");
      const image = (await isFile(`${stem}.png`)) ? `${stem}.png` : (await isFile(`${stem}-1.png`)) ? `${stem}-1.png` : undefined;
      if (!image) continue;
      found.push({ mtime: (await fs.stat(full)).mtimeMs, edit: await this.panelEdit(stem, image, record) });
    }
    return found.sort((a, b) => a.mtime - b.mtime).map((f) => f.edit);
  }

  /** An edit for the webview, its files registered under fresh ids. */
  private async panelEdit(stem: string, image: string, record: EditRecord): Promise<PanelEdit> {
    this.edits += 1;
    const id = `edit-${this.edits}`;
    const prompt = record.prompts[1] ?? "";
    const change = `${stem}.change.png`;
    return {
      image: this.image(id, `edit: ${prompt}`, image, null, true),
      change: (await isFile(change)) ? this.image(`change-${this.edits}`, `what changed: ${prompt}`, change, null, false) : null,
      changeSummary: record.change ?? null,
      prompt,
      mode: record.mode,
      cross: record.crossReplaceSteps,
      self: record.selfReplaceSteps,
      reweight: Object.entries(record.reweight ?? {})
        .map(([w, f]) => `${w}=${f}`)
        .join(", "),
      blend: record.blendAutomatic ? "" : (record.blendWords ?? []).length ? record.blendWords.join(", ") : NO_BLEND,
      blendUsed: (record.blendWords ?? []).join(", "),
      editNull: record.editNull ?? "inverted",
      blendThreshold: record.blendThreshold,
    };
  }

  private allow(dir: string): void {
    const roots = this.panel.webview.options.localResourceRoots ?? [];
    if (!roots.some((r) => r.fsPath === dir))
      this.panel.webview.options = { ...this.panel.webview.options, localResourceRoots: [...roots, vscode.Uri.file(dir)] };
  }

  private image(id: string, label: string, file: string, psnr: number | null, savable: boolean): PanelImage {
    this.files.set(id, file);
    return { id, label, uri: this.panel.webview.asWebviewUri(vscode.Uri.file(file)).toString(), psnr, savable };
  }

  private async handle(message: Exclude<WebviewToHost, { type: "ready" } | { type: "rendered" }>): Promise<void> {
    if (message.type === "cancel") return this.host.cancel();
    if (message.type === "reveal") {
      if (this.artifact) await this.host.reveal(this.artifact);
      return;
    }
    if (message.type === "saveImage") return this.save(message.id);
    if (!this.artifact || !this.outDir) return void this.post({ type: "failed", message: "Invert an image first.", scope: "edit" });
    const r = message.request;
    let reweight: Record<string, number>;
    try {
      reweight = parseReweight(r.reweight);
    } catch (error) {
      return void this.post({ type: "failed", message: (error as Error).message, scope: "edit" });
    }
    const artifact = this.artifact;
    const outDir = this.outDir;
    let modelDir: string | undefined;
    try {
      modelDir = await this.modelFor(artifact);
    } catch (error) {
      return void this.post({ type: "failed", message: (error as Error).message, scope: "edit" });
    }
    if (!modelDir) return void this.post({ type: "failed", message: "Edit not run: no model that made this inversion was chosen.", scope: "edit" });
    try {
      await this.post({ type: "busy", busy: true, what: `Editing: "${r.prompt}"` });
      const s: EditSummary = await this.host.exclusive(`Editing "${r.prompt}"`, (signal, report) =>
        this.host.client().edit(
          {
            modelDir,
            modelOptions: this.host.modelOptions(),
            artifactPath: artifact,
            outDir,
            prompts: [r.prompt],
            mode: r.mode === "auto" ? undefined : r.mode,
            crossReplaceSteps: r.cross,
            selfReplaceSteps: r.self,
            reweight,
            blendWords: parseBlend(r.blend),
            blendThreshold: r.blendThreshold,
            editNull: r.editNull === "default" ? undefined : r.editNull,
            paintedMask: r.mask ?? undefined,
          },
          {
            signal,
            onProgress: (p) => {
              report(p);
              this.progress(p);
            },
          },
        ),
      );
      this.host.log(`edit "${r.prompt}" (${s.mode}) in ${s.seconds.toFixed(1)} s: ${s.images[0]}`);
      const edit = await this.panelEdit(s.attentionMaps.replace(/\.attention\.json$/, ""), s.images[0], s.record);
      await this.post({ type: "edited", edit, attention: panelAttention(s.attention, 1), seconds: s.seconds, provider: s.provider, notes: s.notes });
    } catch (error) {
      const e = error as Error;
      await this.post({
        type: "failed",
        message: e.name === "AbortError" ? "Edit cancelled; nothing was written." : `Edit failed: ${e.message}`,
        scope: "edit",
      });
    }
  }

  /**
   * The model folder to edit `artifactPath` with. The artifact records the sha256 of its model's nti.json,
   * never which folder to load: the configured model if it is that one, else the user picks among the
   * known models that are, or re-inverts. Undefined when nothing was chosen.
   */
  private async modelFor(artifactPath: string): Promise<string | undefined> {
    const [{ readArtifact }, { manifestSha256, modelsMatching }] = await Promise.all([import("../core/artifact"), import("../core/modelList")]);
    // read once per artifact shown, not at every edit
    const made = (this.madeWith ??= (await readArtifact(artifactPath)).header.model);
    const configured = await this.host.modelFolder();
    if ((await manifestSha256(configured)) === made.manifestSha256) return configured;
    const matches = await modelsMatching(await this.host.knownModels(), made.manifestSha256);
    const use = matches.map((m) => `Use ${m.name}`);
    const choice = await vscode.window.showWarningMessage(
      `${path.basename(artifactPath)} was made with model "${made.id}", not with the configured model at ${configured}.${matches.length ? "" : " None of the known models is that one."}`,
      ...use,
      "Re-invert…",
    );
    if (choice === "Re-invert…") await this.reinvert();
    const picked = choice ? use.indexOf(choice) : -1;
    if (picked >= 0) this.host.log(`edit of ${artifactPath} with its model "${matches[picked].name}" (${matches[picked].path})`);
    return picked >= 0 ? matches[picked].path : undefined;
  }

  /** Inverts the artifact's source again with the configured model: the prompt box asks, prefilled. */
  private async reinvert(): Promise<void> {
    const origin = this.origin;
    if (!origin) return;
    if (!(await isFile(origin.image))) {
      void vscode.window.showErrorMessage(`The source image ${origin.image} no longer exists: invert an image from the explorer.`);
      return;
    }
    await vscode.commands.executeCommand("nullText.invertImage", vscode.Uri.file(origin.image), { suggestedPrompt: origin.prompt });
  }

  /** Copies an edit (by id: never a path from the webview) to a PNG the user picks in the workspace. */
  private async save(id: string): Promise<void> {
    const file = this.files.get(id);
    if (!file || !id.startsWith("edit-")) return;
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(path.dirname(file));
    const target = await vscode.window.showSaveDialog({
      defaultUri: vscode.Uri.joinPath(folder, path.basename(file)),
      filters: { PNG: ["png"] },
      saveLabel: "Save edit",
    });
    if (!target) return;
    if (this.origin && path.resolve(target.fsPath) === path.resolve(this.origin.image)) {
      void vscode.window.showErrorMessage("An edit is never saved over the source image: choose another name.");
      return;
    }
    await vscode.workspace.fs.copy(vscode.Uri.file(file), target, { overwrite: true });
    this.host.log(`saved ${file} as ${target.fsPath}`);
  }
}

/** Whether a path is a regular file (async: the extension host never blocks on the disk). */
export function isFile(file: string): Promise<boolean> {
  return fs.stat(file).then(
    (stat) => stat.isFile(),
    () => false,
  );
}

/** An attention JSON written by saveInversion or saveEdit, or null when missing, too large or not one. */
async function readRecord(file: string): Promise<AttentionData | null> {
  try {
    const { readRegularFile } = await import("../core/files");
    const data = JSON.parse((await readRegularFile(file, MAX_RECORD_BYTES)).toString("utf8")) as AttentionData;
    return data && data.format === "nti-attention" && Array.isArray(data.prompts) ? data : null;
  } catch {
    return null;
  }
}

function panelAttention(data: AttentionData, promptIndex: number): PanelAttention | null {
  const p = data.prompts[promptIndex];
  return p ? { prompt: p.prompt, resolution: data.resolution, tokens: p.tokens } : null;
}

function html(webview: vscode.Webview, extensionUri: vscode.Uri): string {
  const script = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, "dist", "webview.js")).toString();
  const style = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, "dist", "webview.css")).toString();
  return panelHtml(webview.cspSource, script, style, randomBytes(16).toString("base64"));
}
