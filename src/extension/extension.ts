/**
 * VS Code glue: commands, settings, progress with Cancel, the engine in a worker thread (the extension
 * host never blocks), the inversion panel and the read-only editor of `.nti` artifacts. Engine logic
 * lives in src/core.
 */
import * as path from "node:path";
import * as vscode from "vscode";
import { METHOD_INFO, type InversionMethod, type ProviderChoice } from "../core/settings";
import { EngineClient } from "../core/engineClient";
import type { ScheduleName } from "../core/engine";
import type { OpenModelOptions } from "../core/model";
import type { Progress } from "../core/inversion";
import type { InvertSummary } from "../core/workerProtocol";
import { POOR_RECONSTRUCTION_DB } from "../shared/protocol";
import { configuredModel, knownModels, modelFolder, selectModel } from "./models";
import { InversionPanel, PANEL_VIEW_TYPE, PanelHost, isFile } from "./panel";

let client: EngineClient | undefined;
let running: AbortController | undefined;
let log: vscode.OutputChannel;
let lastOutput: string | undefined;

/** What the extension returns from activate: read-only state for the end-to-end tests. */
export interface NullTextApi {
  /** What the panel of `artifact` (else the newest panel) says it rendered. */
  panelRendered(artifact?: string): { images: number; lossPoints: number; attentionWords: number } | undefined;
  panelCount(): number;
  /** Each open panel: on screen, its webview started, its artifact, rendered. */
  panelStates(): { visible: boolean; ready: boolean; artifact: string | undefined; rendered: boolean }[];
  busy(): boolean;
}

export function activate(context: vscode.ExtensionContext): NullTextApi {
  log = vscode.window.createOutputChannel("Null-text Inversion");
  const host: PanelHost = {
    client: () => (client ??= new EngineClient(path.join(context.extensionPath, "dist", "worker.js"))),
    modelFolder: () => modelFolder(context.extensionPath),
    modelOptions: () => modelOptions(settings()),
    knownModels: async () => [...(await knownModels(context.extensionPath)), ...(await configuredModel())],
    log: (line) => log.appendLine(line),
    exclusive,
    cancel: () => running?.abort(),
    reveal,
  };
  context.subscriptions.push(
    log,
    vscode.commands.registerCommand("nullText.invertImage", (uri?: vscode.Uri, options?: InvertOptions) => invertImage(context, host, uri, options)),
    vscode.commands.registerCommand("nullText.editInversion", (uri?: vscode.Uri) => editInversion(uri)),
    vscode.commands.registerCommand("nullText.openPanel", () => openPanel()),
    vscode.commands.registerCommand("nullText.selectModel", () => selectModel(context.extensionPath, (l) => log.appendLine(l))),
    vscode.commands.registerCommand("nullText.cancel", () => {
      if (running) running.abort();
      else void vscode.window.showInformationMessage("No inversion is running.");
    }),
    vscode.commands.registerCommand("nullText.revealOutput", () => {
      if (lastOutput) void reveal(lastOutput);
      else void vscode.window.showInformationMessage("Nothing has been written yet in this session.");
    }),
    vscode.window.registerCustomEditorProvider("nullText.artifact", new ArtifactEditor(context, host), {
      webviewOptions: { retainContextWhenHidden: true },
      supportsMultipleEditorsPerDocument: false,
    }),
    // a window reload brings back each inversion panel that showed an artifact
    vscode.window.registerWebviewPanelSerializer(PANEL_VIEW_TYPE, {
      deserializeWebviewPanel: async (webviewPanel, state: unknown) => {
        const file = restorableArtifact(state);
        if (!file || !(await isFile(file))) return webviewPanel.dispose();
        const panel = new InversionPanel(webviewPanel, context, host, [vscode.Uri.file(path.dirname(file))]);
        void panel.showArtifact(file).catch((error: Error) => panel.endRun(error.message));
      },
    }),
  );
  return {
    panelRendered: (artifact?: string) => (artifact ? InversionPanel.showing(artifact) : InversionPanel.onScreen)?.rendered,
    panelCount: () => InversionPanel.count,
    panelStates: () => InversionPanel.states(),
    busy: () => running !== undefined,
  };
}

/** The artifact path a panel saved in its state (see webview/main.ts), if it is one. */
function restorableArtifact(state: unknown): string | undefined {
  const key = (state as { restoreKey?: unknown } | undefined)?.restoreKey;
  return typeof key === "string" && path.isAbsolute(key) && key.endsWith(".nti") ? key : undefined;
}

/**
 * Shows a file in the OS file manager on a desktop window with local files; in the browser, over
 * Remote-SSH, in Codespaces or WSL there is no local file manager to open, so the explorer reveals it.
 */
async function reveal(file: string): Promise<void> {
  const local = vscode.env.uiKind === vscode.UIKind.Desktop && vscode.env.remoteName === undefined;
  const uri = vscode.Uri.file(file);
  if (local) await vscode.commands.executeCommand("revealFileInOS", uri);
  else await vscode.commands.executeCommand("revealInExplorer", uri);
}

export async function deactivate(): Promise<void> {
  running?.abort();
  await client?.dispose();
  client = undefined;
}

/** One job at a time, in a notification with a working Cancel; a second request is refused clearly. */
async function exclusive<T>(title: string, work: (signal: AbortSignal, report: (p: Progress) => void) => Promise<T>): Promise<T> {
  if (running) throw new Error("another inversion or edit is running: cancel it first (Null-text: Cancel Running Inversion)");
  const controller = new AbortController();
  running = controller;
  try {
    return await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (progress, token) => {
      token.onCancellationRequested(() => controller.abort());
      let reported = 0;
      return work(controller.signal, (p) => {
        const percent = overallPercent(p);
        progress.report({
          message: `${p.phase} ${p.step}/${p.total}${p.timestep !== undefined ? `, t=${p.timestep}` : ""}`,
          increment: Math.max(0, percent - reported),
        });
        reported = Math.max(reported, percent);
      });
    });
  } finally {
    if (running === controller) running = undefined;
  }
}

/** Inversion, optimisation (or offsets) and the reconstructions, a share each; edits are one phase. */
function overallPercent(p: Progress): number {
  const share: Record<string, [number, number]> = {
    encode: [0, 0],
    invert: [0, 20],
    optimize: [20, 80],
    direct: [20, 80],
    reconstruct: [80, 90],
    compare: [90, 97],
    edit: [0, 97],
    decode: [97, 100],
  };
  const [from, to] = share[p.phase] ?? [0, 0];
  return Math.round(from + (to - from) * (p.total ? p.step / p.total : 0));
}

function settings() {
  const c = vscode.workspace.getConfiguration("nullText");
  return {
    method: c.get<InversionMethod>("method", "nulltext"),
    steps: c.get<number>("steps", 50),
    guidance: c.get<number>("guidance", 7.5),
    schedule: c.get<ScheduleName>("schedule", "paper"),
    // null: the schedule's own value
    innerSteps: c.get<number | null>("innerSteps", null) ?? undefined,
    earlyStop: c.get<number | null>("earlyStopTolerance", null) ?? undefined,
    threads: c.get<number>("threads", 0),
    executionProvider: c.get<ProviderChoice>("executionProvider", "auto"),
    deviceId: c.get<number>("deviceId", 0),
    outputFolder: c.get<string>("outputFolder", "nti-output"),
  };
}

/** How the worker opens the model (provider, GPU, CPU threads), from the settings. */
function modelOptions(s: ReturnType<typeof settings>): OpenModelOptions {
  return { executionProvider: s.executionProvider, deviceId: s.deviceId, ...(s.threads > 0 ? { threads: s.threads } : {}) };
}

/**
 * A check of the prompt box against the model's vocabulary as one types: for a word-level model, the words
 * it does not know and the words it does. Undefined when the tokenizer cannot be read here (the engine then
 * names the problem when it runs).
 */
async function vocabularyCheck(modelDir: string): Promise<((prompt: string) => string | undefined) | undefined> {
  try {
    // the tokenizer only: no ONNX Runtime in the extension host
    const [{ PromptTokenizer }, { validateManifest }, { readRegularFile, MAX_BYTES }] = await Promise.all([
      import("../core/tokenizer"),
      import("../core/manifest"),
      import("../core/files"),
    ]);
    const manifest = validateManifest(JSON.parse((await readRegularFile(path.join(modelDir, "nti.json"), MAX_BYTES.json)).toString("utf8")));
    const tokenizer = await PromptTokenizer.forModel(modelDir, manifest);
    const known = tokenizer.knownWords();
    return (prompt) => {
      const unknown = tokenizer.encode(prompt).unknownWords;
      if (!unknown.length) return undefined;
      return `The model does not know ${unknown.map((w) => `"${w}"`).join(", ")}${known ? `. It knows: ${known.join(", ")}` : ""}`;
    };
  } catch {
    return undefined;
  }
}

/**
 * Where results go: the configured folder, relative to the image's workspace folder, else to the first
 * workspace folder (an image from elsewhere never gets an output folder beside it), else beside the image
 * when no folder is open at all.
 */
function outputFolder(image: vscode.Uri, configured: string): string {
  if (path.isAbsolute(configured)) return configured;
  const folder = vscode.workspace.getWorkspaceFolder(image) ?? vscode.workspace.workspaceFolders?.[0];
  return path.join(folder ? folder.uri.fsPath : path.dirname(image.fsPath), configured);
}

/** `prompt` runs without asking (tests, scripts); `suggestedPrompt` prefills the prompt box (Re-invert). */
interface InvertOptions {
  prompt?: string;
  suggestedPrompt?: string;
}

async function invertImage(context: vscode.ExtensionContext, host: PanelHost, uri?: vscode.Uri, options?: InvertOptions): Promise<InvertSummary | undefined> {
  const image =
    uri ??
    vscode.window.activeTextEditor?.document.uri ??
    (await vscode.window.showOpenDialog({ canSelectMany: false, filters: { Images: ["png", "jpg", "jpeg", "webp"] }, title: "Image to invert" }))?.[0];
  if (!image) return undefined;
  if (image.scheme !== "file" || !/\.(png|jpe?g|webp)$/i.test(image.fsPath)) {
    void vscode.window.showErrorMessage(`Null-text Inversion inverts PNG, JPEG or WebP files on disk; ${image.toString()} is not one.`);
    return undefined;
  }
  let modelDir: string;
  try {
    modelDir = await modelFolder(context.extensionPath);
  } catch (error) {
    void vscode.window.showErrorMessage((error as Error).message);
    return undefined;
  }
  const promptKey = `prompt:${image.fsPath}`;
  const checkWords = options?.prompt === undefined ? await vocabularyCheck(modelDir) : undefined;
  const prompt =
    options?.prompt ??
    (await vscode.window.showInputBox({
      title: `Invert ${path.basename(image.fsPath)}`,
      prompt: "Describe the image",
      placeHolder: "what the image shows, e.g. a red circle on a white background",
      value: options?.suggestedPrompt ?? context.workspaceState.get<string>(promptKey, ""),
      validateInput: (v) => (v.trim() ? checkWords?.(v) : "The prompt is empty"),
    }));
  if (prompt === undefined) return undefined;
  await context.workspaceState.update(promptKey, prompt);
  const s = settings();
  const outDir = outputFolder(image, s.outputFolder);
  const job = {
    modelDir,
    modelOptions: modelOptions(s),
    imagePath: image.fsPath,
    prompt,
    outDir,
    schedule: s.schedule,
    settings: {
      method: s.method,
      steps: s.steps,
      guidance: s.guidance,
      innerSteps: s.innerSteps,
      earlyStop: s.earlyStop,
      earlyStopSlope: s.earlyStop === undefined ? undefined : 2 * s.earlyStop,
    },
    withAttention: true,
  };
  log.appendLine(`invert ${job.imagePath} with "${prompt}" (model ${modelDir}, ${s.method}, ${s.steps} steps; output ${outDir})`);
  if (running) {
    // refused before any panel is touched: the running job's panel keeps its title, prompt and plot
    void vscode.window.showErrorMessage("Inversion failed: another inversion or edit is running: cancel it first (Null-text: Cancel Running Inversion)");
    return undefined;
  }
  let panel: InversionPanel | undefined;
  try {
    const summary = await exclusive(`Inverting ${path.basename(image.fsPath)}`, (signal, report) => {
      panel = InversionPanel.forRun(context, host, outDir, path.basename(image.fsPath));
      const method = METHOD_INFO[s.method];
      panel.startRun({
        type: "session",
        title: path.basename(image.fsPath),
        prompt,
        method: method?.label ?? s.method,
        lossTrace: method?.lossTrace ?? false,
        attentionControl: method?.promptToPrompt ?? true,
        totalSteps: s.steps,
        running: true,
        editable: false,
      });
      const shown = panel;
      return host.client().invert(job, {
        signal,
        onProgress: (p) => {
          report(p);
          shown.progress(p);
        },
      });
    });
    lastOutput = summary.artifact;
    const fmt = (x: number | null) => (x === null ? "∞" : `${x.toFixed(2)} dB`);
    log.appendLine(`done in ${summary.seconds.toFixed(1)} s: PSNR ${fmt(summary.psnr)} (DDIM only ${fmt(summary.ddimPsnr)}); ${summary.artifact}`);
    for (const note of summary.notes) log.appendLine(`note: ${note}`);
    panel?.showInversion(summary, outDir, image.fsPath);
    const poor = summary.psnr !== null && summary.psnr < POOR_RECONSTRUCTION_DB;
    const text = `Inverted ${path.basename(image.fsPath)}: PSNR ${fmt(summary.psnr)} (DDIM only ${fmt(summary.ddimPsnr)})`;
    const actions = ["Open Reconstruction", "Reveal Output"];
    const shown = poor
      ? vscode.window.showWarningMessage(
          `${text}: a poor reconstruction (below ${POOR_RECONSTRUCTION_DB} dB); edits will not look like the image. Check that the prompt describes it.`,
          ...actions,
        )
      : vscode.window.showInformationMessage(text, ...actions);
    void shown.then((choice) => {
      if (choice === "Open Reconstruction") void vscode.commands.executeCommand("vscode.open", vscode.Uri.file(summary.reconstruction));
      if (choice === "Reveal Output") void reveal(summary.artifact);
    });
    return summary;
  } catch (error) {
    const e = error as Error;
    if (e.name === "AbortError") {
      log.appendLine("cancelled; nothing was written");
      panel?.endRun("Cancelled; nothing was written.");
      return undefined;
    }
    log.appendLine(`failed: ${e.message}`);
    panel?.endRun(e.message);
    void vscode.window.showErrorMessage(`Inversion failed: ${e.message}`);
    return undefined;
  }
}

/** Opens an artifact's panel, where the edit form runs edits. */
async function editInversion(uri?: vscode.Uri): Promise<void> {
  const target =
    uri ?? (await vscode.window.showOpenDialog({ canSelectMany: false, filters: { "Null-text inversion": ["nti"] }, title: "Inversion to edit" }))?.[0];
  if (target) await vscode.commands.executeCommand("vscode.openWith", target, "nullText.artifact");
}

async function openPanel(): Promise<void> {
  const panel = InversionPanel.active;
  if (panel) panel.panel.reveal();
  else await editInversion();
}

/** The read-only editor of `.nti` files: opening one shows its panel (and its edit form). */
class ArtifactEditor implements vscode.CustomReadonlyEditorProvider {
  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly host: PanelHost,
  ) {}

  openCustomDocument(uri: vscode.Uri): vscode.CustomDocument {
    return { uri, dispose: () => undefined };
  }

  resolveCustomEditor(document: vscode.CustomDocument, webviewPanel: vscode.WebviewPanel): void {
    // one panel per artifact: a panel that already shows it (its inversion's) is refreshed and focused
    const existing = InversionPanel.showing(document.uri.fsPath);
    if (existing && existing.panel !== webviewPanel) {
      webviewPanel.dispose();
      existing.panel.reveal();
      void existing.showArtifact(document.uri.fsPath).catch((error: Error) => existing.endRun(error.message));
      return;
    }
    const panel = new InversionPanel(webviewPanel, this.context, this.host, [vscode.Uri.file(path.dirname(document.uri.fsPath))]);
    // Not awaited: VS Code shows the webview only once this returns, and the panel's messages wait for the
    // webview's "ready", so awaiting them here would wait forever.
    void panel.showArtifact(document.uri.fsPath).catch((error: Error) => panel.endRun(error.message));
  }
}
