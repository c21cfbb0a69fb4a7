/**
 * Provider parity, run in its own process (the Vulkan loader reads VK_ICD_FILENAMES and the library path at
 * start): a short null-text inversion and a Prompt-to-Prompt edit of the bundled model run on the CPU while the
 * first call of every graph is recorded (its real feeds and outputs); then each graph is loaded on the provider
 * named in argv[2] and given the same feeds. Prints one JSON object: per graph, the largest absolute difference
 * of each output and the output's largest magnitude.
 */
import * as path from "node:path";
import { GraphSession, type FeedValue } from "../../../src/core/backend";
import { Engine } from "../../../src/core/engine";
import type { ExecutionProvider } from "../../../src/core/settings";

const [provider, modelDir, imagePath] = process.argv.slice(2) as [ExecutionProvider, string, string];
const PROMPT = "a blue circle and a green square on a gray background";

async function main(): Promise<void> {
  const recorded = new Map<string, { feeds: Record<string, FeedValue>; outputs: Record<string, Float32Array> }>();
  const run = GraphSession.prototype.run;
  GraphSession.prototype.run = async function (this: GraphSession, feeds: Record<string, FeedValue>) {
    const outputs = await run.call(this, feeds);
    if (!recorded.has(this.label)) recorded.set(this.label, { feeds: structuredClone(feeds), outputs });
    return outputs;
  };
  const engine = await Engine.open(modelDir, { executionProvider: "cpu" });
  const inverted = await engine.invert({ imagePath, prompt: PROMPT, settings: { steps: 3, innerSteps: 2 }, compareWithDdim: false });
  await engine.edit(inverted.artifact, { prompts: [PROMPT.replace("green", "yellow")], blendWords: ["square"] });
  await engine.close();
  GraphSession.prototype.run = run;

  const graphs: Record<string, { seconds: number; outputs: Record<string, { maxAbsDiff: number; maxAbs: number }> }> = {};
  for (const [file, call] of recorded) {
    const session = await GraphSession.create(file, file, { executionProvider: provider });
    const started = performance.now();
    const outputs = await session.run(call.feeds);
    const seconds = (performance.now() - started) / 1000;
    await session.release();
    const compared: Record<string, { maxAbsDiff: number; maxAbs: number }> = {};
    for (const [name, cpu] of Object.entries(call.outputs)) {
      const other = outputs[name];
      let maxAbsDiff = 0;
      let maxAbs = 0;
      for (let i = 0; i < cpu.length; i++) {
        maxAbsDiff = Math.max(maxAbsDiff, Math.abs(cpu[i] - other[i]));
        maxAbs = Math.max(maxAbs, Math.abs(cpu[i]));
      }
      compared[name] = { maxAbsDiff, maxAbs };
    }
    graphs[path.relative(modelDir, file).split(path.sep).join("/")] = { seconds, outputs: compared };
  }
  process.stdout.write(JSON.stringify({ provider, graphs }) + "\n");
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
