#!/usr/bin/env node
// Runs an extension test module inside a real VS Code: code-server (installed by
// scripts/e2e/install-code-server.sh) serves the workbench on 127.0.0.1, headless Debian
// Chromium opens it with the extension under development and the test module in the URL's
// `payload`, and the workbench reports the tests' exit code through window.codeAutomationExit,
// as with @vscode/test-electron. Exit code = the tests' exit code (1 when the harness fails).
//
//   node scripts/e2e/run.mjs [--extension <dir>] [--tests <module.js>] [--workspace <dir>]
//                            [--timeout <s>] [--code-server <entry.js>] [--browser <path>] [--keep]
//
// Builds nothing, except the default test module: without --tests, test/e2e/suite.ts is bundled
// into dist/e2e/suite.js first (the extension itself must already be built: scripts/build.mjs).
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CODE_SERVER_VERSION = "4.100.3"; // keep in step with install-code-server.sh
const cacheDir = process.env.NTI_E2E_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "nti-e2e");

const { values: opts } = parseArgs({
  options: {
    extension: { type: "string", default: root },
    tests: { type: "string" },
    workspace: { type: "string", default: path.join(root, "media/samples") },
    timeout: { type: "string", default: "300" },
    "code-server": {
      type: "string",
      default: process.env.NTI_CODE_SERVER ?? path.join(cacheDir, `code-server-${CODE_SERVER_VERSION}/node_modules/code-server/out/node/entry.js`),
    },
    browser: { type: "string", default: process.env.NTI_E2E_BROWSER },
    keep: { type: "boolean", default: false }, // keep the temp folder (logs, workspace) for debugging
  },
});

class HarnessError extends Error {}
const say = (msg) => console.log(`[e2e] ${msg}`);

async function main() {
  const extensionDir = path.resolve(opts.extension);
  const codeServer = path.resolve(opts["code-server"]);
  const timeoutMs = Number(opts.timeout) * 1000;
  if (!(timeoutMs > 0)) throw new HarnessError(`--timeout must be a positive number of seconds, got ${opts.timeout}`);
  if (!fs.existsSync(path.join(extensionDir, "package.json"))) throw new HarnessError(`no extension at ${extensionDir} (no package.json)`);
  if (!fs.existsSync(codeServer)) {
    throw new HarnessError(`code-server not found at ${codeServer}; run: bash scripts/e2e/install-code-server.sh`);
  }
  let testsModule;
  if (opts.tests) {
    testsModule = path.resolve(opts.tests);
  } else {
    const { buildSuite } = await import("./build.mjs");
    testsModule = await buildSuite();
  }
  if (!fs.existsSync(testsModule)) throw new HarnessError(`test module not found: ${testsModule}`);
  const browserPath = opts.browser ?? which("chromium");
  if (!browserPath) throw new HarnessError("chromium not found; run: bash scripts/e2e/install-code-server.sh (installs Debian's chromium)");
  const { chromium } = await import("playwright-core").catch(() => {
    throw new HarnessError("playwright-core is not installed; run: npm install");
  });

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "nti-e2e-"));
  const dirs = Object.fromEntries(
    ["user", "ext", "workspace", "config", "data", "cache", "state", "runtime", "browser"].map((d) => [d, path.join(tmp, d)]),
  );
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  // A copy, so tests may write into the workspace (results go to nti-output/) without touching the source.
  fs.cpSync(path.resolve(opts.workspace), dirs.workspace, { recursive: true });
  writeUserSettings(dirs.user);

  let server;
  let browser;
  const serverLog = [];
  const browserLog = [];
  const started = Date.now();
  // Ctrl-C or a CI runner's SIGTERM: code-server is in its own process group, so stop it here
  // (playwright closes the browser on exit by itself).
  const onSignal = (signal) => {
    server?.kill();
    if (!opts.keep) fs.rmSync(tmp, { recursive: true, force: true });
    console.error(`[e2e] interrupted by ${signal}`);
    process.exit(128 + os.constants.signals[signal]);
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, onSignal);

  // Every wait below races `failed`: the overall timeout, or code-server or the browser going away.
  let fail;
  const failed = new Promise((_, reject) => (fail = reject));
  failed.catch(() => {}); // it also rejects during the cleanup, when nobody waits on it any more
  const failTimer = setTimeout(() => fail(new HarnessError(`timed out after ${opts.timeout} s; the tests did not finish`)), timeoutMs);
  const step = (promise) => Promise.race([promise, failed]);

  let page;
  const driver = await startDriver(() => page);
  try {
    server = startServer(codeServer, dirs, serverLog, { NTI_E2E_DRIVER: driver.url });
    server.exited.then((code) => fail(new HarnessError(`code-server exited (${code}) before the tests finished`)));
    const port = await step(server.port);
    say(`code-server ${CODE_SERVER_VERSION} on http://127.0.0.1:${port}/ (${Date.now() - started} ms)`);

    browser = await step(
      chromium.launch({
        executablePath: browserPath,
        headless: true,
        // Chromium's crash reporter would otherwise write under ~/.config/chromium.
        env: { ...process.env, XDG_CONFIG_HOME: dirs.browser, XDG_CACHE_HOME: dirs.browser },
      }),
    );
    browser.on("disconnected", () => fail(new HarnessError("the browser closed before the tests finished")));
    const context = await step(browser.newContext());
    // Only ever talk to our server: the workbench would also try extension galleries and CDNs.
    await step(
      context.route(
        (url) => url.hostname !== "127.0.0.1",
        (route) => {
          browserLog.push(`[blocked] ${route.request().method()} ${route.request().url()}`);
          return route.abort("blockedbyclient");
        },
      ),
    );
    page = await step(context.newPage());
    page.on("console", (msg) => {
      // "%c"-styled messages are the workbench log again, which codeAutomationLog already gets.
      if (!msg.text().startsWith("%c")) browserLog.push(`[console.${msg.type()}] ${msg.text()}`);
    });
    page.on("pageerror", (err) => browserLog.push(`[pageerror] ${err.stack ?? err.message}`));
    page.on("response", (res) => {
      if (res.status() >= 400) browserLog.push(`[http ${res.status()}] ${res.url()}`); // the console omits the URL
    });
    // The workbench's log service writes through codeAutomationLog when the page defines it; the
    // extension host's console (so the tests' output) goes to that log during a test run. Streamed
    // live so that a long or hanging test shows its progress.
    await step(
      page.exposeFunction("codeAutomationLog", (level, args) => {
        const text = (Array.isArray(args) ? args : [args]).map(String).join(" ");
        console.log(level === "info" ? text : `[${level}] ${text}`);
      }),
    );
    let onExit;
    let exited = new Promise((resolve) => (onExit = resolve));
    await step(page.exposeFunction("codeAutomationExit", (code) => onExit(Number(code))));

    // The workbench reads `payload` as a JSON array of [key, value] pairs (the launch arguments of
    // an extension development host); paths are URIs on the server, whose authority is our host.
    const authority = `127.0.0.1:${port}`;
    const remote = (p) => `vscode-remote://${authority}${pathToFileURL(p).pathname}`;
    const payload = [
      ["extensionDevelopmentPath", remote(extensionDir)],
      ["extensionTestsPath", remote(testsModule)],
    ];
    const url = `http://${authority}/?folder=${encodeURIComponent(dirs.workspace)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
    say(`tests ${path.relative(root, testsModule) || testsModule} on extension ${extensionDir}`);
    await step(page.goto(url, { timeout: 0 })); // `failed` carries the timeout

    const code = await step(exited);
    say(`tests exited with code ${code} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    // A window reload: the same workspace opened again, with the after-reload checks as the test module
    // (reload.js beside the suite), so what the suite left open must come back by itself.
    const reloadModule = path.join(path.dirname(testsModule), "reload.js");
    if (code !== 0 || opts.tests || !fs.existsSync(reloadModule)) return code;
    exited = new Promise((resolve) => (onExit = resolve));
    const reloadPayload = [
      ["extensionDevelopmentPath", remote(extensionDir)],
      ["extensionTestsPath", remote(reloadModule)],
    ];
    say("window reload: the workspace again, with test/e2e/reload.ts");
    await step(page.goto(`http://${authority}/?folder=${encodeURIComponent(dirs.workspace)}&payload=${encodeURIComponent(JSON.stringify(reloadPayload))}`, { timeout: 0 }));
    const reloadCode = await step(exited);
    say(`after-reload tests exited with code ${reloadCode} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return reloadCode;
  } finally {
    clearTimeout(failTimer);
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.off(signal, onSignal);
    await browser?.close().catch(() => {});
    await server?.stop();
    driver.close();
    printLogs(serverLog, browserLog);
    if (opts.keep) say(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function writeUserSettings(userDir) {
  const settings = {
    "workbench.startupEditor": "none",
    "workbench.enableExperiments": false,
    "extensions.autoCheckUpdates": false,
    "extensions.autoUpdate": false,
    "extensions.ignoreRecommendations": true,
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "git.enabled": false,
  };
  fs.mkdirSync(path.join(userDir, "User"), { recursive: true });
  fs.writeFileSync(path.join(userDir, "User/settings.json"), JSON.stringify(settings, null, 2));
}

/** Starts code-server in its own process group; resolves `port` once it listens. */
function startServer(entry, dirs, log, extraEnv) {
  const env = { ...process.env };
  // Started from a VS Code terminal, these would point the server at that VS Code.
  for (const k of Object.keys(env)) if (k.startsWith("VSCODE_") || k === "ELECTRON_RUN_AS_NODE") delete env[k];
  Object.assign(env, {
    EXTENSIONS_GALLERY: "{}", // no gallery: otherwise the server queries open-vsx.org
    XDG_CONFIG_HOME: dirs.config,
    XDG_DATA_HOME: dirs.data,
    XDG_CACHE_HOME: dirs.cache,
    XDG_STATE_HOME: dirs.state,
    XDG_RUNTIME_DIR: dirs.runtime,
    ...extraEnv,
  });
  const args = [
    entry,
    "--auth", "none",
    "--disable-telemetry",
    "--disable-update-check",
    "--disable-workspace-trust",
    "--user-data-dir", dirs.user,
    "--extensions-dir", dirs.ext,
    "--bind-addr", "127.0.0.1:0", // the OS picks a free port; we read it from the log
  ];
  // detached: its own process group, so stop() reaches the extension host and other children.
  const child = spawn(process.execPath, args, { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal)));
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new HarnessError("code-server did not start listening within 60 s")), 60_000);
    exited.then((code) => reject(new HarnessError(`code-server exited (${code}) while starting`)));
    let pending = "";
    const onData = (chunk) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        log.push(line);
        const m = /HTTP server listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      }
    };
    child.stdout.setEncoding("utf8").on("data", onData);
    child.stderr.setEncoding("utf8").on("data", onData);
    child.on("close", () => pending && log.push(pending));
  });
  port.catch(() => {}); // awaited by main; avoids an unhandled rejection when it loses a race

  async function stop() {
    if (child.exitCode !== null || child.signalCode !== null) return killGroup("SIGKILL"); // orphans
    killGroup("SIGTERM");
    const gone = await Promise.race([exited.then(() => true), delay(5000).then(() => false)]);
    killGroup("SIGKILL"); // whatever ignored SIGTERM, and children that outlive the server
    if (!gone) await exited;
  }
  function killGroup(signal) {
    try {
      process.kill(-child.pid, signal);
    } catch (err) {
      if (err.code !== "ESRCH") throw err;
    }
  }
  return { port, exited, stop, kill: () => killGroup("SIGKILL") };
}

/**
 * The tests run in the extension host, which cannot reach the page; they drive the workbench UI
 * (type into an input box, press keys, click) by POSTing JSON to this server, whose URL they get in
 * $NTI_E2E_DRIVER (the extension host inherits code-server's environment). See test/e2e/harness.ts.
 */
async function startDriver(getPage) {
  const actions = {
    type: (page, { text }) => page.keyboard.type(text),
    press: (page, { key }) => page.keyboard.press(key),
    click: (page, { selector }) => page.locator(selector).first().click(),
    waitFor: (page, { selector, timeoutMs }) => page.locator(selector).first().waitFor({ timeout: Number(timeoutMs) }),
  };
  const server = http.createServer(async (req, res) => {
    let status = 200;
    let reply = { ok: true };
    try {
      let body = "";
      for await (const chunk of req) body += chunk;
      const request = JSON.parse(body);
      const page = getPage();
      if (!page) throw new Error("the page is not open yet");
      if (!Object.hasOwn(actions, request.action)) throw new Error(`unknown action ${request.action}`);
      await actions[request.action](page, request);
    } catch (err) {
      status = 500;
      reply = { ok: false, error: String(err?.message ?? err) };
    }
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(reply));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

function printLogs(serverLog, browserLog) {
  const section = (title, lines) => {
    console.log(`----- ${title} -----`);
    for (const line of lines) console.log(line);
  };
  section("code-server output", serverLog);
  section("browser console", browserLog);
  console.log("----- end of logs -----");
}

function which(cmd) {
  try {
    return execFileSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`[e2e] ERROR: ${err instanceof HarnessError ? err.message : (err.stack ?? err)}`);
    process.exit(1);
  },
);
