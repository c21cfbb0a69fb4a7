/** The extension's security surface: the panel's CSP, and what package.json lets run (activation, trust, commands, settings). */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { panelHtml } from "../../src/extension/panelHtml";
import { ROOT } from "./helpers/fixtures";

test("the panel's CSP allows one nonce'd script and no inline code", () => {
  const html = panelHtml("https://file+.vscode-resource.test", "https://r/dist/webview.js", "https://r/dist/webview.css", "abc123==");
  const csp = /http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1] ?? "";
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'nonce-abc123=='(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
  const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
  assert.equal(scripts.length, 1);
  assert.match(scripts[0][1], /nonce="abc123=="/);
  assert.equal(scripts[0][2].trim(), "", "no inline script");
  assert.doesNotMatch(html, /\son[a-z]+=/i, "no inline event handlers");
  assert.doesNotMatch(html, /style="/, "no inline styles");
});

test("package.json: nothing runs untrusted, activation only on the commands, the editor and a panel to restore, workspace kind", () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  assert.equal(pkg.capabilities.untrustedWorkspaces.supported, false);
  // implicit: the contributed commands and custom editor; explicit: restoring a panel after a reload
  assert.deepEqual(pkg.activationEvents, ["onWebviewPanel:nullText.inversion"]);
  assert.deepEqual(pkg.extensionKind, ["workspace"]);
  const commands = pkg.contributes.commands.map((c: { command: string }) => c.command).sort();
  assert.deepEqual(commands, [
    "nullText.cancel",
    "nullText.editInversion",
    "nullText.invertImage",
    "nullText.openPanel",
    "nullText.revealOutput",
    "nullText.selectModel",
  ]);
  assert.equal(pkg.contributes.customEditors[0].selector[0].filenamePattern, "*.nti");
  const settings = Object.keys(pkg.contributes.configuration.properties).sort();
  assert.deepEqual(settings, [
    "nullText.deviceId",
    "nullText.earlyStopTolerance",
    "nullText.executionProvider",
    "nullText.guidance",
    "nullText.innerSteps",
    "nullText.method",
    "nullText.modelFolder",
    "nullText.outputFolder",
    "nullText.schedule",
    "nullText.steps",
    "nullText.threads",
  ]);
});
