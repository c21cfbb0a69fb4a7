// Bundles the e2e test suite (test/e2e/suite.ts) into dist/e2e/suite.js, and the after-reload checks
// (test/e2e/reload.ts) into dist/e2e/reload.js: CommonJS modules whose run() the extension host calls.
// vscode stays external: the host provides it.
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export async function buildSuite() {
  await esbuild.build({
    absWorkingDir: root,
    // suite: the cases; reload: what must hold after the suite's window is reloaded (panels restored)
    entryPoints: { suite: "test/e2e/suite.ts", reload: "test/e2e/reload.ts" },
    outdir: "dist/e2e",
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    sourcemap: true,
    external: ["vscode"],
    logLevel: "warning",
  });
  return path.join(root, "dist/e2e/suite.js");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  console.log(await buildSuite());
}
