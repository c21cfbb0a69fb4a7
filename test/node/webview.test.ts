/**
 * The panel's webview bundle in headless Chromium (Debian's, driven by playwright-core) with a stand-in
 * for acquireVsCodeApi that records what the panel posts, fed with real results of the engine on
 * shapes-tiny, under the same Content-Security-Policy the extension sets. Set NTI_UPDATE_SCREENSHOT=1 to
 * refresh media/panel.png.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer, Server } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { chromium, Browser, Page } from "playwright-core";
import { Engine } from "../../src/core/engine";
import { attentionData, saveEdit, saveInversion } from "../../src/core/output";
import { panelHtml } from "../../src/extension/panelHtml";
import { parseWebviewMessage, type HostToWebview } from "../../src/shared/protocol";
import { ROOT, SHAPES_MODEL } from "./helpers/fixtures";

const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync);
const dir = mkdtempSync(path.join(tmpdir(), "nti-webview-"));
let server: Server;
let base = "";
let browser: Browser;
let page: Page;
let inverted: HostToWebview;
let edited: HostToWebview;

/** Serves dist/ and the results folder; the page is the panel's HTML with its CSP. */
function serve(): Promise<void> {
  // the extension's own panel HTML and CSP ('self' stands for the webview's resource origin)
  const page = panelHtml("'self'", "/dist/webview.js", "/dist/webview.css", "dGVzdG5vbmNl").replace("</head>", '<link rel="stylesheet" href="/theme.css"></head>');
  // a dark theme's variables, as VS Code injects them into webviews
  const theme = `:root{--vscode-foreground:#cccccc;--vscode-editor-background:#1e1e1e;--vscode-descriptionForeground:#9d9d9d;--vscode-panel-border:#3c3c3c;--vscode-errorForeground:#f48771;--vscode-focusBorder:#007fd4;--vscode-button-secondaryForeground:#ffffff;--vscode-button-secondaryBackground:#3a3d41;--vscode-font-family:sans-serif;--vscode-font-size:13px}`;
  server = createServer((req, res) => {
    const url = decodeURIComponent((req.url ?? "/").split("?")[0]);
    const types: Record<string, string> = { ".js": "text/javascript", ".css": "text/css", ".png": "image/png" };
    if (url === "/") return res.writeHead(200, { "content-type": "text/html" }).end(page);
    if (url === "/theme.css") return res.writeHead(200, { "content-type": "text/css" }).end(theme);
    if (url === "/favicon.ico") return res.writeHead(204).end();
    const file = url.startsWith("/dist/") ? path.join(ROOT, url) : url.startsWith("/out/") ? path.join(dir, url.slice(5)) : "";
    if (!file || !existsSync(file)) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    base = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
    resolve();
  }));
}

before(async () => {
  if (!existsSync(path.join(ROOT, "dist/webview.js"))) execFileSync(process.execPath, [path.join(ROOT, "scripts/build.mjs")]);
  // real results: shapes-tiny on the bundled sample, a short schedule
  const engine = await Engine.open(SHAPES_MODEL);
  const prompt = "a blue circle and a green square on a gray background";
  const result = await engine.invert({ imagePath: path.join(ROOT, "media/samples/two-shapes.png"), prompt, settings: { steps: 25, innerSteps: 10 } });
  const attention = attentionData(await engine.attention(result.artifact));
  const saved = await saveInversion(dir, "two-shapes.png", result);
  // and a real edit of it, as the panel shows one: the square recoloured, local blend on its word
  const editPrompt = "a blue circle and a yellow square on a gray background";
  const edit = await engine.edit(result.artifact, { prompts: [editPrompt], blendWords: ["square"] });
  const savedEdit = await saveEdit(dir, saved.artifact, edit);
  await engine.close();
  const uri = (f: string) => `/out/${path.basename(f)}`;
  const h = result.artifact.header;
  inverted = {
    type: "inverted",
    images: [
      { id: "source", label: "source", uri: uri(saved.source), psnr: null, savable: false },
      { id: "ddim", label: "DDIM only", uri: uri(saved.ddimReconstruction!), psnr: result.ddimPsnr, savable: false },
      { id: "reconstruction", label: "null-text", uri: uri(saved.reconstruction), psnr: result.psnr, savable: false },
    ],
    steps: h.steps,
    seconds: h.stats.seconds,
    unetForward: h.stats.unetForward,
    unetBackward: h.stats.unetBackward,
    notes: result.notes,
    attention: { prompt, resolution: attention.resolution, tokens: attention.prompts[0].tokens },
    editable: true,
  };
  edited = {
    type: "edited",
    image: { id: "edit-1", label: `edit: ${editPrompt}`, uri: uri(savedEdit.images[0]), psnr: null, savable: true },
    attention: null,
    mode: edit.edit.mode,
    seconds: edit.seconds,
    notes: [],
  };
  await serve();
  assert.ok(CHROMIUM, "Debian chromium is needed (apt-get install chromium)");
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1100, height: 1150 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  // page code is passed as strings: tsx's transform would add helpers the browser does not have
  await page.addInitScript({ content: "window.posted = []; window.acquireVsCodeApi = () => ({ postMessage: (m) => window.posted.push(m) });" });
  await page.goto(base);
  await waitFor("window.posted.some((m) => m.type === 'ready')").catch((e: Error) => {
    throw new Error(`${e.message}: ${errors.join("; ")}`);
  });
  assert.deepEqual(errors, [], "no script errors and no CSP violations");
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** Polls an expression from outside the page (waitForFunction would need 'unsafe-eval', which the CSP forbids). */
async function waitFor(expression: string, timeoutMs = 10000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await page.evaluate(expression))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${expression}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const send = (m: HostToWebview) => page.evaluate(`window.postMessage(${JSON.stringify(m)}, "*")`);
const posted = () => page.evaluate("window.posted") as Promise<unknown[]>;
const lossPoints = () => page.evaluate("window.ntiPanel.lossPoints()") as Promise<number>;
const setField = (id: string, value: string) => page.evaluate(`document.getElementById(${JSON.stringify(id)}).value = ${JSON.stringify(value)}`);

test("the loss plot grows one point per finished timestep while the inversion runs", async () => {
  const h = inverted as Extract<HostToWebview, { type: "inverted" }>;
  await send({ type: "session", title: "two-shapes.png", prompt: "a blue circle and a green square on a gray background", method: "null-text", totalSteps: 25, running: true, editable: false });
  for (const [i, record] of h.steps.slice(0, 7).entries()) {
    await send({ type: "progress", phase: "optimize", step: i + 1, total: 25, timestep: record.timestep, record });
  }
  assert.equal(await lossPoints(), 7);
  assert.match(await page.locator(".status").first().innerText(), /optimize 7\/25/);
  assert.ok(await page.locator(".plot svg").count(), "the chart is drawn as SVG");
});

test("the results: three images with PSNR, the full plot, the attention viewer reacts to a word", async () => {
  await send(inverted);
  await waitFor("document.querySelectorAll('figure img').length === 3 && [...document.querySelectorAll('figure img')].every((i) => i.naturalWidth > 0)");
  const captions = await page.locator("figcaption").allInnerTexts();
  assert.equal(captions.length, 3);
  assert.match(captions[2], /null-text\s+PSNR \d+\.\d\d dB/);
  assert.equal(await lossPoints(), 25);
  await page.locator(".word", { hasText: "circle" }).hover();
  assert.equal(await page.evaluate("window.ntiPanel.attentionWord()"), "circle");
  assert.match(await page.locator(".attention .status").innerText(), /"circle" \(token 3\)/);
  const rendered = parseWebviewMessage(((await posted()) as { type: string }[]).filter((m) => m.type === "rendered").pop());
  assert.deepEqual(rendered, { type: "rendered", images: 3, lossPoints: 25, attentionWords: 11 });
});

test("the edit form posts a well-formed edit request with the painted mask", async () => {
  await setField("edit-prompt", "a blue circle and a yellow square on a gray background");
  await setField("edit-blend", "square");
  await setField("edit-reweight", "yellow=2");
  await page.locator("canvas.brush").scrollIntoViewIfNeeded();
  const box = (await page.locator("canvas.brush").boundingBox())!;
  await page.mouse.move(box.x + 60, box.y + 190);
  await page.mouse.down();
  await page.mouse.move(box.x + 90, box.y + 200, { steps: 5 });
  await page.mouse.up();
  await page.locator("#edit-run").click();
  const all = (await posted()) as { type: string }[];
  const edit = parseWebviewMessage(all.find((m) => m.type === "edit"));
  assert.ok(edit && edit.type === "edit", "the host's validator accepts it");
  assert.equal(edit.request.prompt, "a blue circle and a yellow square on a gray background");
  assert.equal(edit.request.mode, "auto");
  assert.equal(edit.request.blend, "square");
  assert.equal(edit.request.reweight, "yellow=2");
  assert.ok(edit.request.mask && edit.request.mask.side === 64 && edit.request.mask.values.some((v) => v === 1), "the painted mask travels");
  // the host answers with the edit, which joins the grid
  await send(edited);
  await waitFor("document.querySelectorAll('figure img').length === 4 && [...document.querySelectorAll('figure img')].every((i) => i.naturalWidth > 0)");
  assert.match((await page.locator("figcaption").allInnerTexts())[3], /edit: a blue circle and a yellow square/);
  if (process.env.NTI_UPDATE_SCREENSHOT) {
    await page.locator(".word", { hasText: "square" }).click(); // pinned: its map stays on the image
    await page.evaluate("window.scrollTo(0, 0)");
    await page.screenshot({ path: path.join(ROOT, "media/panel.png"), fullPage: true });
  }
});

test("forged or malformed messages are rejected by the host's validator", () => {
  for (const bad of [null, 3, { type: "edit" }, { type: "saveImage", id: "../../etc/passwd" }, { type: "edit", request: { prompt: "x", mode: "auto", cross: 2, self: 0, reweight: "", blend: "", mask: null } }, { type: "readFile", path: "/etc/passwd" }]) {
    assert.equal(parseWebviewMessage(bad), null, JSON.stringify(bad));
  }
});
