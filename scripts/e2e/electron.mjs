// The same end-to-end suite under @vscode/test-electron, for machines that can download VS Code
// (`npm run test:electron`). Here (no download) scripts/e2e/run.mjs runs it in code-server instead.
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { runTests } from "@vscode/test-electron";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const workspace = mkdtempSync(path.join(tmpdir(), "nti-e2e-electron-"));
cpSync(path.join(root, "media/samples"), workspace, { recursive: true });
try {
  await runTests({
    extensionDevelopmentPath: root,
    extensionTestsPath: path.join(root, "dist/e2e/suite.js"),
    launchArgs: [workspace, "--disable-extensions"],
  });
} catch (error) {
  console.error(`test:electron: ${error instanceof Error ? error.message : error}`);
  process.exitCode = 1;
} finally {
  rmSync(workspace, { recursive: true, force: true });
}
