/**
 * Run by scripts/e2e/run.mjs after test/e2e/suite.ts, in the same workspace opened again (a window
 * reload): the inversion panels the suite left open must come back through the panel serializer and
 * render their artifacts again, without any command being run.
 */
import * as vscode from "vscode";
import { assert, runTests, test, waitFor } from "./harness";

interface NullTextApi {
  panelRendered(artifact?: string): { images: number; lossPoints: number; attentionWords: number } | undefined;
  panelCount(): number;
  panelStates(): { visible: boolean; ready: boolean; artifact: string | undefined; rendered: boolean }[];
}

test(
  "after a window reload the inversion panels are back and render their artifacts",
  async () => {
    const ext = vscode.extensions.getExtension("nti.null-text-inversion");
    assert(ext, "the extension is not installed");
    // the restored panels activate the extension (onWebviewPanel); wait for that rather than activating it
    await waitFor("the extension to be activated by a restored panel", () => ext.isActive, 60_000);
    const api = ext.exports as NullTextApi;
    await waitFor("a restored panel", () => api.panelCount() > 0, 30_000);
    const rendered = (await waitFor("a restored panel to render its artifact", () => api.panelRendered(), 30_000).catch((error: Error) => {
      // which panel came back, was on screen, had started its script: the next reader of a failure needs it
      throw new Error(`${error.message}; panels: ${JSON.stringify(api.panelStates())}`);
    }))!;
    assert(rendered.images >= 3, `a restored panel shows ${rendered.images} images`);
    assert(rendered.lossPoints > 0, "a restored panel has no loss plot");
    console.log(`[restored] ${api.panelCount()} panels; the newest shows ${JSON.stringify(rendered)}`);
  },
  { timeoutMs: 150_000 },
);

export async function run(): Promise<void> {
  await runTests();
}
