/**
 * The inversion panel: a webview that shows source, DDIM-only and null-text reconstructions with their
 * PSNR and the per-step losses. Scripts only from dist/ with a nonce; images only from the output folder.
 */
import { randomBytes } from "node:crypto";
import * as vscode from "vscode";
import type { InvertSummary } from "../core/workerProtocol";
import { HostToWebview, METHOD_LABELS, PanelImage, parseWebviewMessage } from "../shared/protocol";

export class InversionPanel {
  private static current: InversionPanel | undefined;
  private last: InvertSummary | undefined;

  private constructor(private readonly panel: vscode.WebviewPanel, context: vscode.ExtensionContext) {
    panel.onDidDispose(() => (InversionPanel.current = undefined));
    panel.webview.onDidReceiveMessage((raw) => {
      const message = parseWebviewMessage(raw);
      if (message?.type === "reveal" && this.last) {
        const file = message.which === "artifact" ? this.last.artifact : this.last.reconstruction;
        void vscode.commands.executeCommand("revealFileInOS", vscode.Uri.file(file));
      }
    });
    panel.webview.html = html(panel.webview, context.extensionUri);
  }

  static show(context: vscode.ExtensionContext, outDir: string): InversionPanel {
    const roots = [vscode.Uri.joinPath(context.extensionUri, "dist"), vscode.Uri.file(outDir)];
    if (InversionPanel.current) {
      InversionPanel.current.panel.webview.options = { enableScripts: true, localResourceRoots: roots };
      InversionPanel.current.panel.reveal();
      return InversionPanel.current;
    }
    const panel = vscode.window.createWebviewPanel("nullText.inversion", "Null-text Inversion", vscode.ViewColumn.Beside, {
      enableScripts: true,
      localResourceRoots: roots,
      retainContextWhenHidden: true,
    });
    InversionPanel.current = new InversionPanel(panel, context);
    return InversionPanel.current;
  }

  post(message: HostToWebview): void {
    void this.panel.webview.postMessage(message);
  }

  showResult(s: InvertSummary): void {
    this.last = s;
    const uri = (file: string) => this.panel.webview.asWebviewUri(vscode.Uri.file(file)).toString();
    const images: PanelImage[] = [{ label: "source", uri: uri(s.source), psnr: null }];
    if (s.ddimReconstruction) images.push({ label: "DDIM only", uri: uri(s.ddimReconstruction), psnr: s.ddimPsnr });
    images.push({ label: METHOD_LABELS[s.settings.method], uri: uri(s.reconstruction), psnr: s.psnr });
    this.post({
      type: "result",
      prompt: s.prompt,
      method: s.settings.method,
      images,
      steps: s.steps,
      seconds: s.seconds,
      unetForward: s.unetForward,
      unetBackward: s.unetBackward,
      notes: s.notes,
    });
  }
}

function html(webview: vscode.Webview, extensionUri: vscode.Uri): string {
  const nonce = randomBytes(16).toString("base64");
  const script = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, "dist", "webview.js"));
  const style = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, "dist", "webview.css"));
  const csp = [
    "default-src 'none'",
    `img-src ${webview.cspSource}`,
    `style-src ${webview.cspSource}`,
    `script-src 'nonce-${nonce}'`,
  ].join("; ");
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${style}">
<title>Null-text Inversion</title></head>
<body><main id="app"></main><script type="module" nonce="${nonce}" src="${script}"></script></body></html>`;
}
