/**
 * The engine served over a message port, for a worker thread: one Engine per model folder, kept open
 * between jobs (session creation is the slow part); one AbortController per job, so "cancel" stops it
 * between two graph calls and nothing is written.
 */
import type { MessagePort } from "node:worker_threads";
import { readArtifact } from "./artifact";
import { firstLine } from "./backend";
import { Engine } from "./engine";
import { maskFromPainting } from "./image";
import type { RunOptions } from "./inversion";
import type { OpenModelOptions } from "./model";
import { attentionData, saveEdit, saveInversion } from "./output";
import { METHOD_INFO } from "./settings";
import type { EditJob, EditSummary, InvertJob, InvertSummary, WorkerReply, WorkerRequest } from "./workerProtocol";

export function serveEngine(port: MessagePort): void {
  const engines = new Map<string, Promise<Engine>>();
  const running = new Map<number, AbortController>();
  const send = (reply: WorkerReply) => port.postMessage(reply);

  const engineFor = (modelDir: string, options: OpenModelOptions = {}) => {
    const key = `${modelDir}\0${JSON.stringify(options)}`;
    let engine = engines.get(key);
    if (!engine) {
      engine = Engine.open(modelDir, options);
      engines.set(key, engine);
      engine.catch(() => engines.delete(key)); // a broken folder may be fixed and retried
    }
    return engine;
  };

  const invert = async (job: InvertJob, run: RunOptions): Promise<InvertSummary> => {
    const engine = await engineFor(job.modelDir, job.modelOptions);
    const result = await engine.invert(
      { imagePath: job.imagePath, prompt: job.prompt, schedule: job.schedule, settings: job.settings, compareWithDdim: job.compareWithDdim },
      run,
    );
    // the source prompt's maps come from the control UNet: methods generated without it have none
    const withMaps = job.withAttention && METHOD_INFO[result.artifact.header.settings.method].promptToPrompt;
    const attention = withMaps ? attentionData(await engine.attention(result.artifact, run)) : null;
    run.signal?.throwIfAborted();
    const saved = await saveInversion(job.outDir, job.imagePath, result, attention ?? undefined);
    const h = result.artifact.header;
    return {
      kind: "invert",
      ...saved,
      prompt: h.prompt,
      psnr: h.stats.psnr,
      ddimPsnr: h.stats.ddimPsnr,
      settings: h.settings,
      steps: h.steps,
      unetForward: h.stats.unetForward,
      unetBackward: h.stats.unetBackward,
      seconds: h.stats.seconds,
      provider: engine.model.provider,
      notes: result.notes,
      attention,
    };
  };

  const edit = async (job: EditJob, run: RunOptions): Promise<EditSummary> => {
    // everything that is not about where the job runs is the engine's EditSpec
    const { kind: _kind, modelDir, modelOptions, artifactPath, outDir, paintedMask, ...spec } = job;
    const artifact = await readArtifact(artifactPath, run.signal);
    const engine = await engineFor(modelDir, modelOptions);
    const latentSize = engine.model.manifest.latent_size;
    const userMask = paintedMask ? maskFromPainting(paintedMask.values, paintedMask.side, latentSize) : undefined;
    const result = await engine.edit(artifact, { ...spec, userMask }, run);
    run.signal?.throwIfAborted();
    const saved = await saveEdit(outDir, artifactPath, result);
    return {
      kind: "edit",
      ...saved,
      mode: result.edit.mode,
      prompts: result.edit.prompts,
      sourcePsnr: Number.isFinite(result.sourcePsnr) ? result.sourcePsnr : null,
      seconds: result.seconds,
      provider: engine.model.provider,
      notes: result.notes,
      attention: attentionData(result),
    };
  };

  port.on("message", async (message: WorkerRequest) => {
    if (message.type === "cancel") {
      running.get(message.id)?.abort();
      return;
    }
    const controller = new AbortController();
    running.set(message.id, controller);
    const run: RunOptions = { signal: controller.signal, onProgress: (progress) => send({ id: message.id, type: "progress", progress }) };
    try {
      const summary = message.job.kind === "invert" ? await invert(message.job, run) : await edit(message.job, run);
      send({ id: message.id, type: "done", summary });
    } catch (error) {
      const name = error instanceof Error ? error.name : "Error";
      send({ id: message.id, type: "error", name, message: firstLine(error) });
    } finally {
      running.delete(message.id);
    }
  });
}
