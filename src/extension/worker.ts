/** Worker-thread entry: the engine runs here so the extension host never blocks. */
import { parentPort } from "node:worker_threads";
import { serveEngine } from "../core/engineWorker";

if (!parentPort) throw new Error("dist/worker.js must run in a worker thread");
serveEngine(parentPort);
