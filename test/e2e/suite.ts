/**
 * End-to-end tests, run inside a real VS Code extension host by scripts/e2e/run.mjs (the module
 * format @vscode/test-electron uses: export run(), throw on failure). The workspace folder is a
 * temporary copy of media/samples. Add cases with test(name, fn); they run in order.
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import * as vscode from "vscode";
import { assert, runTests, test, ui, waitFor } from "./harness";

const EXTENSION_ID = "nti.null-text-inversion";
const COMMAND = "nullText.invertImage";

function extension(): vscode.Extension<unknown> {
  const ext = vscode.extensions.getExtension(EXTENSION_ID);
  assert(ext, `extension ${EXTENSION_ID} is not installed`);
  return ext;
}

function workspaceFolder(): vscode.WorkspaceFolder {
  const folder = vscode.workspace.workspaceFolders?.[0];
  assert(folder, "no workspace folder is open");
  return folder;
}

test("the extension is present", () => {
  const { packageJSON } = extension();
  assert(packageJSON.publisher === "nti", `publisher is ${packageJSON.publisher}`);
  assert(packageJSON.name === "null-text-inversion", `name is ${packageJSON.name}`);
});

test("the workspace folder holds the test image", async () => {
  const image = vscode.Uri.joinPath(workspaceFolder().uri, "two-shapes.png");
  const stat = await vscode.workspace.fs.stat(image);
  assert(stat.size > 0, `${image.toString()} is empty`);
});

test(`running ${COMMAND} activates the extension`, async () => {
  const ext = extension();
  assert(!ext.isActive, "the extension was active before its command ran (it should activate lazily)");
  // With an image, the command asks for a prompt; dismissing the input box ends it without work.
  const image = vscode.Uri.joinPath(workspaceFolder().uri, "two-shapes.png");
  let settled = false;
  const run = Promise.resolve(vscode.commands.executeCommand(COMMAND, image)).finally(() => (settled = true));
  await waitFor("the extension to activate", () => ext.isActive);
  await waitFor("the command to end after closing its input box", async () => {
    await vscode.commands.executeCommand("workbench.action.closeQuickOpen");
    return settled;
  });
  await run; // rethrows if the command failed
});

test(`getCommands includes ${COMMAND}`, async () => {
  const commands = await vscode.commands.getCommands(true);
  assert(commands.includes(COMMAND), `${COMMAND} is not among ${commands.length} commands`);
});

test("the UI driver reaches the workbench page", async () => {
  if (!process.env.NTI_E2E_DRIVER) return; // under @vscode/test-electron there is no page driver
  await ui.press("Escape");
});

interface NullTextApi {
  panelRendered(artifact?: string): { images: number; lossPoints: number; attentionWords: number } | undefined;
  panelCount(): number;
  busy(): boolean;
}

async function outputFiles(): Promise<string[]> {
  const out = vscode.Uri.joinPath(workspaceFolder().uri, "nti-output");
  try {
    return (await vscode.workspace.fs.readDirectory(out)).map(([name]) => name).sort();
  } catch {
    return [];
  }
}

test(
  "Invert Image with Prompt inverts a real image with the bundled model and shows the panel",
  async () => {
    await vscode.workspace.getConfiguration("nullText").update("steps", 20, vscode.ConfigurationTarget.Workspace);
    const image = vscode.Uri.joinPath(workspaceFolder().uri, "two-shapes.png");
    const summary = (await vscode.commands.executeCommand(COMMAND, image, { prompt: "a blue circle and a green square on a gray background" })) as
      | { artifact: string; reconstruction: string; psnr: number; ddimPsnr: number; steps: unknown[] }
      | undefined;
    assert(summary, "the command returned no result");
    const files = await outputFiles();
    for (const f of ["two-shapes.nti", "two-shapes.reconstruction.png", "two-shapes.ddim.png", "two-shapes.source.png"]) {
      assert(files.includes(f), `nti-output lacks ${f} (has ${files.join(", ")})`);
    }
    assert(summary.steps.length === 20, `${summary.steps.length} loss records`);
    assert(summary.psnr > summary.ddimPsnr, `null-text ${summary.psnr} dB is not above DDIM ${summary.ddimPsnr} dB`);
    const api = extension().exports as NullTextApi;
    const rendered = (await waitFor("the panel to render the result", () => api.panelRendered(), 20_000))!;
    assert(rendered.images === 3, `the panel shows ${rendered.images} images`);
    assert(rendered.lossPoints === 20, `the loss plot has ${rendered.lossPoints} points`);
    assert(rendered.attentionWords === 11, `the attention viewer lists ${rendered.attentionWords} words`);
  },
  { timeoutMs: 180_000 },
);

test(
  "Cancel Running Inversion stops a run midway and leaves no file",
  async () => {
    await vscode.workspace.getConfiguration("nullText").update("steps", 50, vscode.ConfigurationTarget.Workspace);
    const before = await outputFiles();
    const api = extension().exports as NullTextApi;
    const image = vscode.Uri.joinPath(workspaceFolder().uri, "one-shape.png");
    const run = Promise.resolve(vscode.commands.executeCommand(COMMAND, image, { prompt: "a orange square on a gray background" }));
    await waitFor("the inversion to start", () => api.busy(), 20_000);
    await new Promise((r) => setTimeout(r, 1500)); // well into the optimisation
    assert(api.busy(), "the run ended before it could be cancelled");
    await vscode.commands.executeCommand("nullText.cancel");
    const result = await run;
    assert(result === undefined, "a cancelled run returned a result");
    assert(!api.busy(), "still busy after cancelling");
    const after = await outputFiles();
    assert(JSON.stringify(after) === JSON.stringify(before), `files changed: ${after.filter((f) => !before.includes(f)).join(", ")}`);
  },
  { timeoutMs: 120_000 },
);

test(
  "a second inversion while one runs is refused and leaves the first run's panel untouched; the first completes",
  async () => {
    await vscode.workspace.getConfiguration("nullText").update("steps", 10, vscode.ConfigurationTarget.Workspace);
    const api = extension().exports as NullTextApi;
    const image = vscode.Uri.joinPath(workspaceFolder().uri, "one-shape.png");
    const first = Promise.resolve(vscode.commands.executeCommand(COMMAND, image, { prompt: "a orange square on a gray background" }));
    await waitFor("the first inversion to start", () => api.busy(), 20_000);
    const panels = api.panelCount();
    const other = vscode.Uri.joinPath(workspaceFolder().uri, "two-shapes.png");
    const second = await vscode.commands.executeCommand(COMMAND, other, { prompt: "a blue circle and a green square on a gray background" });
    assert(second === undefined, "the second inversion ran beside the first");
    assert(api.panelCount() === panels, "the refused run opened or took over a panel");
    const result = (await first) as { artifact: string } | undefined;
    assert(result, "the first inversion did not complete");
    assert((await outputFiles()).includes("one-shape.nti"), "the first inversion's artifact is missing");
    const rendered = (await waitFor("the first run's panel to render its result", () => api.panelRendered(result.artifact), 20_000))!;
    assert(
      rendered.images === 3 && rendered.lossPoints === 10,
      `the first run's panel shows ${JSON.stringify(rendered)}: its plot was reset or its results replaced`,
    );
  },
  { timeoutMs: 120_000 },
);

test(
  "opening a saved .nti from the explorer renders its images and its history of edits",
  async () => {
    const artifact = vscode.Uri.joinPath(workspaceFolder().uri, "nti-output", "two-shapes.nti");
    assert((await outputFiles()).includes("two-shapes.nti"), "no artifact from the earlier test");
    // an edit saved beside it, made by the CLI over the same engine
    const cli = path.join(extension().extensionPath, "dist", "cli.js");
    const edit = spawnSync(
      process.execPath,
      [cli, "edit", artifact.fsPath, "--prompt", "a blue circle and a yellow square on a gray background", "--blend", "square", "--json"],
      {
        encoding: "utf8",
        env: { ...process.env, ELECTRON_RUN_AS_NODE: "1" },
        timeout: 120_000,
      },
    );
    assert(edit.status === 0, `nti edit failed: ${edit.stderr}`);
    const api = extension().exports as NullTextApi;
    const started = Date.now();
    await vscode.commands.executeCommand("vscode.openWith", artifact, "nullText.artifact");
    const rendered = (await waitFor("the .nti panel to render", () => api.panelRendered(artifact.fsPath), 30_000))!;
    const seconds = (Date.now() - started) / 1000;
    console.log(`[timing] a .nti panel rendered ${seconds.toFixed(2)} s after it was opened`);
    // source, DDIM only, null-text; the edit and its "what changed" heatmap
    assert(rendered.images === 5, `the .nti panel shows ${rendered.images} images (expected 3 and one edit with its change map)`);
    assert(rendered.lossPoints === 20, `the .nti panel's plot has ${rendered.lossPoints} points`);
    assert(rendered.attentionWords === 11, `the .nti panel lists ${rendered.attentionWords} words`);
    await vscode.commands.executeCommand("workbench.action.closeActiveEditor");
  },
  { timeoutMs: 180_000 },
);

test(
  "the fast schedule setting reaches the engine; the inner-steps setting overrides it",
  async () => {
    const config = vscode.workspace.getConfiguration("nullText");
    await config.update("steps", 10, vscode.ConfigurationTarget.Workspace);
    await config.update("schedule", "fast", vscode.ConfigurationTarget.Workspace);
    const image = vscode.Uri.joinPath(workspaceFolder().uri, "two-shapes.png");
    const prompt = "a blue circle and a green square on a gray background";
    try {
      type Summary = { settings: { innerLoop: string; nullInit: string; innerSteps: number }; steps: { losses: number[] }[] };
      const fast = (await vscode.commands.executeCommand(COMMAND, image, { prompt })) as Summary | undefined;
      assert(fast, "the command returned no result");
      const s = fast.settings;
      assert(s.innerLoop === "lean" && s.nullInit === "prompt" && s.innerSteps === 3, `settings ${JSON.stringify(s)}`);
      assert(
        fast.steps.every((r) => r.losses.length <= 3),
        "a step ran more than 3 iterations",
      );
      await config.update("innerSteps", 2, vscode.ConfigurationTarget.Workspace);
      const two = (await vscode.commands.executeCommand(COMMAND, image, { prompt })) as Summary | undefined;
      assert(two?.settings.innerSteps === 2 && two.settings.innerLoop === "lean", `settings ${JSON.stringify(two?.settings)}`);
    } finally {
      await config.update("schedule", undefined, vscode.ConfigurationTarget.Workspace);
      await config.update("innerSteps", undefined, vscode.ConfigurationTarget.Workspace);
    }
  },
  { timeoutMs: 120_000 },
);

export async function run(): Promise<void> {
  await runTests();
}
