/**
 * The engine served over a message port, for a worker thread: one Engine per model folder, kept open
 * between jobs (session creation is the slow part); one AbortController per job, so "cancel" stops it
 * between two graph calls and nothing is written.
 */
import type { MessagePort } from "node:worker_threads";
import { firstLine } from "./backend";
import { Engine } from "./engine";
import { saveInversion } from "./output";
import type { InvertJob, InvertSummary, WorkerReply, WorkerRequest } from "./workerProtocol";

export function serveEngine(port: MessagePort): void {
  const engines = new Map<string, Promise<Engine>>();
  const running = new Map<number, AbortController>();
  const send = (reply: WorkerReply) => port.postMessage(reply);

  const engineFor = (job: InvertJob) => {
    const key = `${job.modelDir}\0${JSON.stringify(job.modelOptions ?? {})}`;
    let engine = engines.get(key);
    if (!engine) {
      engine = Engine.open(job.modelDir, job.modelOptions);
      engines.set(key, engine);
      engine.catch(() => engines.delete(key)); // a broken folder may be fixed and retried
    }
    return engine;
  };

  port.on("message", async (message: WorkerRequest) => {
    if (message.type === "cancel") {
      running.get(message.id)?.abort();
      return;
    }
    const controller = new AbortController();
    running.set(message.id, controller);
    try {
      const engine = await engineFor(message.job);
      controller.signal.throwIfAborted();
      const job = message.job;
      const result = await engine.invert(
        { imagePath: job.imagePath, prompt: job.prompt, settings: job.settings, compareWithDdim: job.compareWithDdim },
        { signal: controller.signal, onProgress: (progress) => send({ id: message.id, type: "progress", progress }) },
      );
      controller.signal.throwIfAborted();
      const saved = await saveInversion(job.outDir, job.imagePath, result);
      const h = result.artifact.header;
      const summary: InvertSummary = {
        ...saved,
        prompt: h.prompt,
        psnr: h.stats.psnr,
        ddimPsnr: h.stats.ddimPsnr,
        settings: h.settings,
        steps: h.steps,
        unetForward: h.stats.unetForward,
        unetBackward: h.stats.unetBackward,
        seconds: h.stats.seconds,
        notes: result.notes,
      };
      send({ id: message.id, type: "done", summary });
    } catch (error) {
      const name = error instanceof Error ? error.name : "Error";
      send({ id: message.id, type: "error", name, message: firstLine(error) });
    } finally {
      running.delete(message.id);
    }
  });
}
