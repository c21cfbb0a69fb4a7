/** The engine in a worker thread, as the extension hosts it: progress, cancel, no partial files, reuse. */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { EngineClient } from "../../src/core/engineClient";
import { savePng } from "../../src/core/image";
import { TINY_MODEL, tinyFixtures } from "./helpers/fixtures";

const dir = mkdtempSync(path.join(tmpdir(), "nti-worker-"));
const client = new EngineClient(path.join(__dirname, "helpers/worker-entry.cjs"));
after(() => client.dispose());

test("invert in the worker, cancel one mid-way, then run again", async () => {
  const imagePath = path.join(dir, "image.png");
  await savePng(imagePath, tinyFixtures().tensors.image.data as Uint8Array, 64);
  const job = { modelDir: TINY_MODEL, imagePath, prompt: "a red circle on a white background", settings: { steps: 10, innerSteps: 3 } };

  const controller = new AbortController();
  const cancelledOut = path.join(dir, "cancelled");
  const cancelled = client.invert(
    { ...job, outDir: cancelledOut },
    { signal: controller.signal, onProgress: (p) => p.phase === "optimize" && p.step === 4 && controller.abort() },
  );
  await assert.rejects(cancelled, { name: "AbortError" });
  assert.ok(!existsSync(cancelledOut) || readdirSync(cancelledOut).length === 0, "a cancelled run leaves no files");
  assert.equal(client.busy, false);

  const steps: number[] = [];
  const summary = await client.invert({ ...job, outDir: path.join(dir, "done") }, { onProgress: (p) => p.phase === "optimize" && steps.push(p.step) });
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(summary.steps.length, 10);
  for (const f of [summary.artifact, summary.reconstruction, summary.source]) assert.ok(existsSync(f), f);

  await assert.rejects(client.invert({ ...job, imagePath: path.join(dir, "nope.png"), outDir: dir }), /nope.png: cannot read it \(ENOENT\)/);

  // an edit of the saved inversion, with a painted mask over the left half of the 64 px source
  const side = 64;
  const values = Array.from({ length: side * side }, (_, i) => (i % side < side / 2 ? 1 : 0));
  const edited = await client.edit({
    modelDir: job.modelDir,
    artifactPath: summary.artifact,
    outDir: path.join(dir, "done"),
    prompts: ["a blue circle on a white background"],
    paintedMask: { side, values },
    userMaskMode: "replace",
  });
  assert.equal(edited.mode, "replace");
  assert.ok(existsSync(edited.images[0]) && existsSync(edited.attentionMaps));
  assert.equal(edited.attention.prompts[1].tokens[1].token, "blue");
});

test("an invert job can bring the source prompt's attention maps", async () => {
  const imagePath = path.join(dir, "image.png");
  const summary = await client.invert({
    modelDir: TINY_MODEL,
    imagePath,
    prompt: "a red circle on a white background",
    settings: { steps: 5, innerSteps: 2 },
    outDir: path.join(dir, "attention"),
    withAttention: true,
  });
  assert.ok(summary.attention);
  assert.deepEqual(
    summary.attention.prompts[0].tokens.map((t) => t.token),
    ["a", "red", "circle", "on", "a", "white", "background"],
  );
  assert.equal(summary.attention.prompts[0].tokens[0].map.length, summary.attention.resolution ** 2);
});
