/**
 * VS Code glue: the "Invert Image with Prompt…" command runs the engine in a worker thread with a
 * cancellable progress notification, saves results to the output folder (never over the source), and
 * shows them in the inversion panel. Engine logic lives in src/core.
 */
import * as path from "node:path";
import * as vscode from "vscode";
import { EngineClient } from "../core/engineClient";
import type { InvertSummary } from "../core/workerProtocol";
import { InversionPanel } from "./panel";

let client: EngineClient | undefined;
let log: vscode.OutputChannel;

export function activate(context: vscode.ExtensionContext): void {
  log = vscode.window.createOutputChannel("Null-text Inversion");
  context.subscriptions.push(
    log,
    vscode.commands.registerCommand("nullText.invertImage", (uri?: vscode.Uri) => invertImage(context, uri)),
  );
}

export async function deactivate(): Promise<void> {
  await client?.dispose();
  client = undefined;
}

function engineClient(context: vscode.ExtensionContext): EngineClient {
  client ??= new EngineClient(path.join(context.extensionPath, "dist", "worker.js"));
  return client;
}

function modelFolder(context: vscode.ExtensionContext): string {
  const configured = vscode.workspace.getConfiguration("nullText").get<string>("modelFolder", "").trim();
  return configured ? configured : path.join(context.extensionPath, "models", "shapes-tiny");
}

function outputFolder(image: vscode.Uri): string {
  const configured = vscode.workspace.getConfiguration("nullText").get<string>("outputFolder", "nti-output");
  if (path.isAbsolute(configured)) return configured;
  const folder = vscode.workspace.getWorkspaceFolder(image);
  return path.join(folder ? folder.uri.fsPath : path.dirname(image.fsPath), configured);
}

async function invertImage(context: vscode.ExtensionContext, uri?: vscode.Uri): Promise<void> {
  const image =
    uri ??
    (
      await vscode.window.showOpenDialog({
        canSelectMany: false,
        filters: { Images: ["png", "jpg", "jpeg", "webp"] },
        title: "Image to invert",
      })
    )?.[0];
  if (!image) return;
  if (image.scheme !== "file") {
    void vscode.window.showErrorMessage(`Null-text Inversion reads images from disk; ${image.toString()} is not a file.`);
    return;
  }
  const promptKey = `prompt:${image.fsPath}`;
  const prompt = await vscode.window.showInputBox({
    title: `Invert ${path.basename(image.fsPath)}`,
    prompt: "Describe the image",
    value: context.workspaceState.get<string>(promptKey, ""),
    validateInput: (v) => (v.trim() ? undefined : "The prompt is empty"),
  });
  if (prompt === undefined) return;
  await context.workspaceState.update(promptKey, prompt);
  const job = { modelDir: modelFolder(context), imagePath: image.fsPath, prompt, outDir: outputFolder(image) };
  log.appendLine(`invert ${job.imagePath} with "${prompt}" (model ${job.modelDir}, output ${job.outDir})`);
  const panel = InversionPanel.show(context, job.outDir);
  panel.post({ type: "started", prompt, image: path.basename(image.fsPath), method: "nulltext", totalSteps: 0 });
  try {
    const summary = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Inverting ${path.basename(image.fsPath)}`, cancellable: true },
      (progress, token) => {
        const controller = new AbortController();
        token.onCancellationRequested(() => controller.abort());
        let reported = 0;
        return engineClient(context).invert(job, {
          signal: controller.signal,
          onProgress: (p) => {
            panel.post({ type: "progress", ...p });
            // overall percent: inversion, optimisation (or offsets) and the two reconstructions, a quarter each
            const weight = ({ encode: 0, invert: 0, optimize: 1, direct: 1, reconstruct: 2, compare: 3, decode: 4 } as Record<string, number>)[p.phase] ?? 0;
            const percent = Math.min(100, Math.round(((weight + (p.total ? p.step / p.total : 0)) / 4) * 100));
            const message = `${p.phase} ${p.step}/${p.total}${p.timestep !== undefined ? `, t=${p.timestep}` : ""}`;
            progress.report({ message, increment: Math.max(0, percent - reported) });
            reported = Math.max(reported, percent);
          },
        });
      },
    );
    report(summary, panel);
  } catch (error) {
    const e = error as Error;
    if (e.name === "AbortError") {
      log.appendLine("cancelled; nothing was written");
      panel.post({ type: "failed", message: "Cancelled; nothing was written." });
      return;
    }
    log.appendLine(`failed: ${e.message}`);
    panel.post({ type: "failed", message: e.message });
    void vscode.window.showErrorMessage(`Inversion failed: ${e.message}`);
  }
}

function report(summary: InvertSummary, panel: InversionPanel): void {
  const fmt = (x: number | null) => (x === null ? "∞" : `${x.toFixed(2)} dB`);
  log.appendLine(`done in ${summary.seconds.toFixed(1)} s: PSNR ${fmt(summary.psnr)} (DDIM only ${fmt(summary.ddimPsnr)}); ${summary.artifact}`);
  for (const note of summary.notes) log.appendLine(`note: ${note}`);
  panel.showResult(summary);
  void vscode.window
    .showInformationMessage(`Inverted: PSNR ${fmt(summary.psnr)} (DDIM only ${fmt(summary.ddimPsnr)})`, "Open Reconstruction", "Reveal Output")
    .then((choice) => {
      if (choice === "Open Reconstruction") void vscode.commands.executeCommand("vscode.open", vscode.Uri.file(summary.reconstruction));
      if (choice === "Reveal Output") void vscode.commands.executeCommand("revealFileInOS", vscode.Uri.file(summary.artifact));
    });
}
