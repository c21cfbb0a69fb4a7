/**
 * The platform packages `npm run package` builds (scripts/package.mjs), opened as a user's VS Code would get
 * them: each is marked for its target, carries that target's onnxruntime and sharp binaries, and no native
 * file of another platform. Run by scripts/test.sh after the packaging step.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import * as yauzl from "yauzl";

const ROOT = path.resolve(__dirname, "../..");
const ORT_VERSION = JSON.parse(readFileSync(path.join(ROOT, "node_modules/onnxruntime-node/package.json"), "utf8")).version as string;
/** vsce target -> onnxruntime-node's folder and the @img packages it needs: what scripts/package.mjs builds. */
const TARGETS = JSON.parse(readFileSync(path.join(ROOT, "scripts/package-targets.json"), "utf8")) as Record<string, { ort: string; img: string[] }>;
const NATIVE = /\.(node|dll|dylib|so(\.\d+)*)$/;

async function entries(file: string): Promise<Map<string, Buffer | null>> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) => yauzl.open(file, { lazyEntries: true }, (e, z) => (e ? reject(e) : resolve(z))));
  const out = new Map<string, Buffer | null>();
  await new Promise<void>((resolve, reject) => {
    zip.on("entry", (entry: yauzl.Entry) => {
      if (entry.fileName !== "extension.vsixmanifest") {
        out.set(entry.fileName, null);
        zip.readEntry();
        return;
      }
      zip.openReadStream(entry, (e, stream) => {
        if (e) return reject(e);
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => {
          out.set(entry.fileName, Buffer.concat(chunks));
          zip.readEntry();
        });
      });
    });
    zip.on("end", () => resolve());
    zip.on("error", reject);
    zip.readEntry();
  });
  return out;
}

for (const [target, own] of Object.entries(TARGETS)) {
  const file = path.join(ROOT, "dist", `null-text-inversion-${target}.vsix`);
  const hasRuntime = existsSync(path.join(ROOT, "node_modules/onnxruntime-node/bin/napi-v6", own.ort));
  test(
    `${target}: its own native binaries and no other platform's`,
    { skip: hasRuntime ? false : `onnxruntime-node ${ORT_VERSION} ships no ${own.ort} binary, so no ${target} package is built` },
    async () => {
      assert.ok(existsSync(file), `${file} is missing: run npm run package`);
      const files = await entries(file);
      assert.match(files.get("extension.vsixmanifest")!.toString("utf8"), new RegExp(`TargetPlatform="${target}"`));
      const native = [...files.keys()].filter((f) => NATIVE.test(f));
      const mine = (f: string) =>
        f.startsWith(`extension/node_modules/onnxruntime-node/bin/napi-v6/${own.ort}/`) ||
        own.img.some((p) => f.startsWith(`extension/node_modules/@img/${p}/`));
      assert.deepEqual(
        native.filter((f) => !mine(f)),
        [],
        "native files of another platform",
      );
      assert.ok(native.includes(`extension/node_modules/onnxruntime-node/bin/napi-v6/${own.ort}/onnxruntime_binding.node`), "the runtime's binding");
      assert.ok(
        native.some((f) => f.startsWith(`extension/node_modules/@img/${own.img[0]}/`) && f.endsWith(".node")),
        "sharp's binding",
      );
      for (const p of own.img)
        assert.ok(
          native.some((f) => f.startsWith(`extension/node_modules/@img/${p}/`)),
          `${p} carries its library`,
        );
      for (const needed of [
        "extension/dist/extension.js",
        "extension/dist/worker.js",
        "extension/dist/cli.js",
        "extension/dist/webview.js",
        "extension/models/shapes-tiny/nti.json",
      ])
        assert.ok(files.has(needed), needed);
      assert.ok(![...files.keys()].some((f) => /^extension\/(src|test|exporter|node_modules\/@types)\//.test(f)), "no sources, tests or type packages");
    },
  );
}
