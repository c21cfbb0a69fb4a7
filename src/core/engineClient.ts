/**
 * The host's side of the engine worker: starts the worker thread, sends jobs, routes progress, turns an
 * AbortSignal into a "cancel" message, and rejects with the worker's error (AbortError on cancel).
 */
import { Worker } from "node:worker_threads";
import type { Progress } from "./inversion";
import type { EditJob, EditSummary, InvertJob, InvertSummary, Job, WorkerReply, WorkerRequest } from "./workerProtocol";

class EngineWorkerError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

interface Pending {
  resolve: (summary: InvertSummary | EditSummary) => void;
  reject: (error: Error) => void;
  onProgress?: (p: Progress) => void;
}

export interface JobOptions {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export class EngineClient {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  /** `workerFile` is a script that calls serveEngine(parentPort). */
  constructor(workerFile: string) {
    // A deeper native stack than the default 4 MB: ONNX Runtime's session creation recurses over the
    // process's command line (see src/cli/nti.ts), which in an extension host is VS Code's, not ours.
    this.worker = new Worker(workerFile, { resourceLimits: { stackSizeMb: 32 } });
    this.worker.on("message", (reply: WorkerReply) => this.receive(reply));
    this.worker.on("error", (error) => this.failAll(error));
    this.worker.on("exit", (code) => this.failAll(new Error(`the engine worker stopped (exit code ${code})`)));
  }

  get busy(): boolean {
    return this.pending.size > 0;
  }

  invert(job: Omit<InvertJob, "kind">, options: JobOptions = {}): Promise<InvertSummary> {
    return this.run({ kind: "invert", ...job }, options) as Promise<InvertSummary>;
  }

  edit(job: Omit<EditJob, "kind">, options: JobOptions = {}): Promise<EditSummary> {
    return this.run({ kind: "edit", ...job }, options) as Promise<EditSummary>;
  }

  async dispose(): Promise<void> {
    await this.worker.terminate();
  }

  private run(job: Job, options: JobOptions): Promise<InvertSummary | EditSummary> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(new EngineWorkerError("AbortError", "cancelled"));
        return;
      }
      this.pending.set(id, { resolve, reject, onProgress: options.onProgress });
      options.signal?.addEventListener("abort", () => this.post({ id, type: "cancel" }), { once: true });
      this.post({ id, type: "run", job });
    });
  }

  private post(message: WorkerRequest): void {
    this.worker.postMessage(message);
  }

  private receive(reply: WorkerReply): void {
    const pending = this.pending.get(reply.id);
    if (!pending) return;
    if (reply.type === "progress") {
      pending.onProgress?.(reply.progress);
      return;
    }
    this.pending.delete(reply.id);
    if (reply.type === "done") pending.resolve(reply.summary);
    else pending.reject(new EngineWorkerError(reply.name, reply.message));
  }

  private failAll(error: Error): void {
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }
}
