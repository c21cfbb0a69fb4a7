/**
 * The host's side of the engine worker: starts the worker thread, sends jobs, routes progress, turns an
 * AbortSignal into a "cancel" message, and rejects with the worker's error (AbortError on cancel).
 */
import { Worker } from "node:worker_threads";
import type { Progress } from "./inversion";
import type { InvertJob, InvertSummary, WorkerReply, WorkerRequest } from "./workerProtocol";

export class EngineWorkerError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

interface Pending {
  resolve: (summary: InvertSummary) => void;
  reject: (error: Error) => void;
  onProgress?: (p: Progress) => void;
}

export class EngineClient {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  /** `workerFile` is a script that calls serveEngine(parentPort); execArgv lets tests load TypeScript. */
  constructor(workerFile: string, execArgv: string[] = []) {
    this.worker = new Worker(workerFile, { execArgv });
    this.worker.on("message", (reply: WorkerReply) => this.receive(reply));
    this.worker.on("error", (error) => this.failAll(error));
    this.worker.on("exit", (code) => this.failAll(new Error(`the engine worker stopped (exit code ${code})`)));
  }

  get busy(): boolean {
    return this.pending.size > 0;
  }

  invert(job: InvertJob, options: { signal?: AbortSignal; onProgress?: (p: Progress) => void } = {}): Promise<InvertSummary> {
    const id = this.nextId++;
    return new Promise<InvertSummary>((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(new EngineWorkerError("AbortError", "cancelled"));
        return;
      }
      this.pending.set(id, { resolve, reject, onProgress: options.onProgress });
      options.signal?.addEventListener("abort", () => this.post({ id, type: "cancel" }), { once: true });
      this.post({ id, type: "invert", job });
    });
  }

  async dispose(): Promise<void> {
    await this.worker.terminate();
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
