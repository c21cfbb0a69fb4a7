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
});
