/**
 * Every ONNX Runtime call of the engine lives here, so the execution provider (CPU today; CUDA or
 * WebGPU later) is a one-file swap. The rest of the engine sees plain typed arrays.
 */
import * as ort from "onnxruntime-node";

export interface BackendOptions {
  /** Intra-op threads; 0 lets ONNX Runtime choose. */
  threads?: number;
  executionProvider?: "cpu" | "cuda";
  /**
   * ONNX Runtime's graph optimisations (default "all"). Fusions pick other kernels and so another float
   * rounding; the parity tests run both to show their bounds hold across kernels (docs/tolerances.md).
   */
  graphOptimization?: "all" | "basic";
}

export interface TensorInfo {
  name: string;
  type: string;
  /** Dimensions; strings are symbolic (dynamic) axes. */
  shape: (number | string)[];
}

export type FeedValue = { type: "float32"; data: Float32Array; dims: readonly number[] } | { type: "int64"; data: BigInt64Array; dims: readonly number[] };

export const f32 = (data: Float32Array, dims: readonly number[]): FeedValue => ({ type: "float32", data, dims });
export const i64 = (data: BigInt64Array, dims: readonly number[]): FeedValue => ({ type: "int64", data, dims });
export const scalar = (value: number): FeedValue => f32(Float32Array.of(value), [1]);
export const timestepFeed = (t: number): FeedValue => i64(BigInt64Array.of(BigInt(t)), [1]);

/** Time spent inside ONNX Runtime, for the engine-overhead figure of the benchmarks. */
export interface RunStats {
  calls: number;
  seconds: number;
}

export class GraphSession {
  readonly stats: RunStats = { calls: 0, seconds: 0 };

  private constructor(
    readonly label: string,
    private readonly session: ort.InferenceSession,
  ) {}

  static async create(label: string, file: string, options: BackendOptions = {}): Promise<GraphSession> {
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: [options.executionProvider ?? "cpu"],
      graphOptimizationLevel: options.graphOptimization ?? "all",
    };
    if (options.threads && options.threads > 0) sessionOptions.intraOpNumThreads = options.threads;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(file, sessionOptions);
    } catch (error) {
      throw new Error(`${label}: ONNX Runtime cannot load it: ${firstLine(error)}`);
    }
    return new GraphSession(label, session);
  }

  get inputs(): TensorInfo[] {
    return this.session.inputMetadata.map(toInfo);
  }

  get outputs(): TensorInfo[] {
    return this.session.outputMetadata.map(toInfo);
  }

  async run(feeds: Record<string, FeedValue>): Promise<Record<string, Float32Array>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, value] of Object.entries(feeds)) {
      if (value.type === "float32") checkFinite(value.data, `${this.label}: input ${name}`);
      ortFeeds[name] = new ort.Tensor(value.type, value.data, value.dims);
    }
    const started = performance.now();
    const results = await this.session.run(ortFeeds);
    this.stats.seconds += (performance.now() - started) / 1000;
    this.stats.calls += 1;
    const out: Record<string, Float32Array> = {};
    for (const [name, tensor] of Object.entries(results)) {
      if (tensor.type !== "float32") throw new Error(`${this.label}: output ${name} is ${tensor.type}, expected float32`);
      out[name] = checkFinite(tensor.data as Float32Array, `${this.label}: output ${name}`);
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** A NaN or infinity where a finite number was needed: in a graph's input or output, named. */
export class NonFiniteError extends Error {
  override name = "NonFiniteError";
}

/**
 * Every value of every graph call is checked: one NaN in a latent or an embedding otherwise spreads to the
 * whole image and ends as a black PNG with exit code 0. The scan costs far less than the graph call.
 */
function checkFinite(values: Float32Array, where: string): Float32Array {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]))
      throw new NonFiniteError(`${where} holds ${values[i]} at index ${i} of ${values.length}: the model or its inputs produced non-finite numbers`);
  }
  return values;
}

function toInfo(meta: ort.InferenceSession.ValueMetadata): TensorInfo {
  if (!meta.isTensor) return { name: meta.name, type: "non-tensor", shape: [] };
  return { name: meta.name, type: String(meta.type), shape: [...meta.shape] };
}

export function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return (
    text
      .split("\n")
      .map((s) => s.trim())
      .find((s) => s.length > 0) ?? "unknown error"
  );
}
