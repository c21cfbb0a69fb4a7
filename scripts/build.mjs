// Bundles the extension host, the engine worker, the CLI and the webview with esbuild.
// Native packages (onnxruntime-node, sharp) and vscode stay external: they are loaded from node_modules / the host.
import * as esbuild from "esbuild";

const watch = process.argv.includes("--watch");
const production = process.argv.includes("--production");
const node = {
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  sourcemap: !production,
  minify: production,
  external: ["vscode", "onnxruntime-node", "sharp"],
  logLevel: "warning",
};
const builds = [
  { ...node, entryPoints: { extension: "src/extension/extension.ts", worker: "src/extension/worker.ts" }, outdir: "dist" },
  { ...node, entryPoints: { cli: "src/cli/nti.ts" }, outdir: "dist" }, // keeps the entry's #! line
  {
    bundle: true,
    platform: "browser",
    target: "es2022",
    format: "esm",
    sourcemap: !production,
    minify: production,
    entryPoints: { webview: "webview/main.ts" },
    outdir: "dist",
    logLevel: "warning",
  },
];
if (watch) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
