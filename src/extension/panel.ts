/**
 * One inversion shown in a webview (a panel opened by a command, or the custom editor of a `.nti` file):
 * streams progress and results to it, runs the edits it asks for through the engine worker, and saves an
 * edit into the workspace on request. Scripts only from dist/ with a nonce; images only from the output
 * folder (and data URIs for images read from an artifact).
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import * as vscode from "vscode";
import type { EngineClient } from "../core/engineClient";
import type { Progress } from "../core/inversion";
import type { KnownModel } from "../core/modelList";
import type { AttentionData } from "../core/output";
import type { EditSummary, InvertSummary } from "../core/workerProtocol";
import { panelHtml } from "./panelHtml";
import {
  HostToWebview,
  METHOD_LABELS,
  PanelAttention,
  PanelImage,
  WebviewToHost,
  parseReweight,
  parseWebviewMessage,
  parseWords,
} from "../shared/protocol";

export interface PanelHost {
  client(): EngineClient;
  /** The configured model folder (the setting, else the first bundled model). */
  modelFolder(): Promise<string>;
  /** Every model the user has: the bundled ones and the configured one. */
  knownModels(): Promise<KnownModel[]>;
  log(line: string): void;
  /** Runs a job exclusively (one at a time), with a cancellable progress notification. */
  exclusive<T>(title: string, work: (signal: AbortSignal, report: (p: Progress) => void) => Promise<T>): Promise<T>;
  cancel(): void;
}

export class InversionPanel {
  private static current: InversionPanel | undefined;
  /** Files the webview may name (by id): only what this panel produced. */
  private readonly files = new Map<string, string>();
  private artifact: string | undefined;
  private outDir: string | undefined;
  private edits = 0;
  /** The original image and prompt, to offer a fresh inversion when the artifact no longer fits the model. */
  private origin: { image: string; prompt: string } | undefined;
  private ready: Promise<void>;
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
    panel.webview.options = { enableScripts: true, localResourceRoots: [vscode.Uri.joinPath(context.extensionUri, "dist"), vscode.Uri.joinPath(context.extensionUri, "media"), ...roots] };
    panel.webview.html = html(panel.webview, context.extensionUri);
    panel.webview.onDidReceiveMessage((raw) => {
      const message = parseWebviewMessage(raw);
      if (!message) {
        host.log(`ignored a malformed message from the panel: ${JSON.stringify(raw).slice(0, 200)}`);
        return;
      }
      if (message.type === "ready") markReady();
      else if (message.type === "rendered") this.rendered = { images: message.images, lossPoints: message.lossPoints, attentionWords: message.attentionWords };
      else void this.handle(message);
    });
    panel.onDidDispose(() => {
      if (InversionPanel.current === this) InversionPanel.current = undefined;
    });
  }

  /** The panel commands open (one, reused). */
  static forCommands(context: vscode.ExtensionContext, host: PanelHost, outDir: string): InversionPanel {
    const existing = InversionPanel.current;
    if (existing) {
      const roots = existing.panel.webview.options.localResourceRoots ?? [];
      if (!roots.some((r) => r.fsPath === outDir)) {
        existing.panel.webview.options = { ...existing.panel.webview.options, localResourceRoots: [...roots, vscode.Uri.file(outDir)] };
      }
      existing.panel.reveal(undefined, true);
      return existing;
    }
    const panel = vscode.window.createWebviewPanel("nullText.inversion", "Null-text Inversion", { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true }, { enableScripts: true, retainContextWhenHidden: true });
    InversionPanel.current = new InversionPanel(panel, context, host, [vscode.Uri.file(outDir)]);
    return InversionPanel.current;
  }

  static get active(): InversionPanel | undefined {
    return InversionPanel.current;
  }

  async post(message: HostToWebview): Promise<void> {
    await this.ready;
    await this.panel.webview.postMessage(message);
  }

  progress(p: Progress): void {
    void this.post({ type: "progress", ...p });
  }

  /** Shows a finished inversion (from the worker). */
  showInversion(s: InvertSummary, outDir: string, image: string): void {
    this.origin = { image, prompt: s.prompt };
    this.artifact = s.artifact;
    this.outDir = outDir;
    this.files.clear();
    const images: PanelImage[] = [this.image("source", "source", s.source, null, false)];
    if (s.ddimReconstruction) images.push(this.image("ddim", "DDIM only", s.ddimReconstruction, s.ddimPsnr, false));
    images.push(this.image("reconstruction", METHOD_LABELS[s.settings.method] ?? s.settings.method, s.reconstruction, s.psnr, false));
    void this.post({
      type: "inverted",
      images,
      steps: s.steps,
      seconds: s.seconds,
      unetForward: s.unetForward,
      unetBackward: s.unetBackward,
      notes: s.notes,
      attention: s.attention ? panelAttention(s.attention, 0) : null,
      editable: true,
    });
  }

  /** Shows an artifact read from disk (the custom editor): its images beside it when present. */
  async showArtifact(artifactPath: string, header: { prompt: string; source: { path: string }; settings: { method: string; steps: number }; steps: InvertSummary["steps"]; stats: { psnr: number | null; ddimPsnr: number | null; unetForward: number; unetBackward: number; seconds: number }; notes: string[] }, sourcePng: Buffer): Promise<void> {
    this.origin = { image: header.source.path, prompt: header.prompt };
    this.artifact = artifactPath;
    this.outDir = path.dirname(artifactPath);
    this.files.clear();
    const stem = artifactPath.replace(/\.nti$/, "");
    const exists = (f: string) => fs.stat(f).then(() => true, () => false);
    const images: PanelImage[] = [{ id: "source", label: "source", uri: `data:image/png;base64,${sourcePng.toString("base64")}`, psnr: null, savable: false }];
    if (await exists(`${stem}.ddim.png`)) images.push(this.image("ddim", "DDIM only", `${stem}.ddim.png`, header.stats.ddimPsnr, false));
    if (await exists(`${stem}.reconstruction.png`)) images.push(this.image("reconstruction", METHOD_LABELS[header.settings.method] ?? header.settings.method, `${stem}.reconstruction.png`, header.stats.psnr, false));
    await this.post({ type: "session", title: path.basename(artifactPath), prompt: header.prompt, method: METHOD_LABELS[header.settings.method] ?? header.settings.method, totalSteps: header.settings.steps, running: false, editable: true });
    await this.post({ type: "inverted", images, steps: header.steps, seconds: header.stats.seconds, unetForward: header.stats.unetForward, unetBackward: header.stats.unetBackward, notes: header.notes, attention: null, editable: true });
  }

  private image(id: string, label: string, file: string, psnr: number | null, savable: boolean): PanelImage {
    this.files.set(id, file);
    return { id, label, uri: this.panel.webview.asWebviewUri(vscode.Uri.file(file)).toString(), psnr, savable };
  }

  private async handle(message: Exclude<WebviewToHost, { type: "ready" } | { type: "rendered" }>): Promise<void> {
    if (message.type === "cancel") return this.host.cancel();
    if (message.type === "reveal") {
      if (this.artifact) await vscode.commands.executeCommand("revealFileInOS", vscode.Uri.file(this.artifact));
      return;
    }
    if (message.type === "saveImage") return this.save(message.id);
    if (!this.artifact || !this.outDir) return void this.post({ type: "failed", message: "Invert an image first." });
    const r = message.request;
    let reweight: Record<string, number>;
    try {
      reweight = parseReweight(r.reweight);
    } catch (error) {
      return void this.post({ type: "failed", message: (error as Error).message });
    }
    const artifact = this.artifact;
    const outDir = this.outDir;
    let modelDir: string | undefined;
    try {
      modelDir = await this.modelFor(artifact);
    } catch (error) {
      return void this.post({ type: "failed", message: (error as Error).message });
    }
    if (!modelDir) return void this.post({ type: "failed", message: "Edit not run: no model that made this inversion was chosen." });
    try {
      await this.post({ type: "busy", busy: true, what: `Editing: "${r.prompt}"` });
      const s: EditSummary = await this.host.exclusive(`Editing "${r.prompt}"`, (signal, report) =>
        this.host.client().edit(
          {
            modelDir,
            artifactPath: artifact,
            outDir,
            prompts: [r.prompt],
            mode: r.mode === "auto" ? undefined : r.mode,
            crossReplaceSteps: r.cross,
            selfReplaceSteps: r.self,
            reweight,
            blendWords: parseWords(r.blend),
            paintedMask: r.mask ?? undefined,
          },
          { signal, onProgress: (p) => { report(p); this.progress(p); } },
        ),
      );
      this.edits += 1;
      const id = `edit-${this.edits}`;
      this.host.log(`edit "${r.prompt}" (${s.mode}) in ${s.seconds.toFixed(1)} s: ${s.images[0]}`);
      await this.post({ type: "edited", image: this.image(id, `edit: ${r.prompt}`, s.images[0], null, true), attention: panelAttention(s.attention, 1), mode: s.mode, seconds: s.seconds, notes: s.notes });
    } catch (error) {
      const e = error as Error;
      await this.post({ type: "failed", message: e.name === "AbortError" ? "Edit cancelled; nothing was written." : `Edit failed: ${e.message}` });
    }
  }

  /**
   * The model folder to edit `artifactPath` with. The artifact records the sha256 of its model's nti.json,
   * never which folder to load: the configured model if it is that one, else the user picks among the
   * known models that are, or re-inverts. Undefined when nothing was chosen.
   */
  private async modelFor(artifactPath: string): Promise<string | undefined> {
    const [{ readArtifact }, { manifestSha256, modelsMatching }] = await Promise.all([import("../core/artifact"), import("../core/modelList")]);
    const made = (await readArtifact(artifactPath)).header.model;
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
    const exists = await fs.stat(origin.image).then((s) => s.isFile(), () => false);
    if (!exists) {
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
    const target = await vscode.window.showSaveDialog({ defaultUri: vscode.Uri.joinPath(folder, path.basename(file)), filters: { PNG: ["png"] }, saveLabel: "Save edit" });
    if (!target) return;
    if (this.origin && path.resolve(target.fsPath) === path.resolve(this.origin.image)) {
      void vscode.window.showErrorMessage("An edit is never saved over the source image: choose another name.");
      return;
    }
    await vscode.workspace.fs.copy(vscode.Uri.file(file), target, { overwrite: true });
    this.host.log(`saved ${file} as ${target.fsPath}`);
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
