/**
 * Every ONNX Runtime call of the engine lives here, so the execution provider (CPU, CUDA, DirectML, CoreML,
 * WebGPU) is chosen in one file. The rest of the engine sees plain typed arrays.
 */
import * as ort from "onnxruntime-node";
import type { ExecutionProvider } from "./settings";

// Failures reach the caller as exceptions with their message; the runtime's own log lines (a provider library
// that did not load while "auto" probes, nodes a GPU provider leaves to the CPU) would only clutter stderr.
ort.env.logLevel = "fatal";

export interface BackendOptions {
  /** Intra-op threads of the CPU provider; 0 lets ONNX Runtime choose. Other providers ignore it. */
  threads?: number;
  executionProvider?: ExecutionProvider;
  /** The GPU a CUDA or DirectML session runs on (default 0). */
  deviceId?: number;
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
    const provider = options.executionProvider ?? "cpu";
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: [providerConfig(provider, options.deviceId)],
      graphOptimizationLevel: options.graphOptimization ?? "all",
      // The memory pattern pre-plans one block per run shape and keeps it for the session's life, one per
      // session and batch size: on sd15-256 it raised the whole job's peak RSS from 1615 to 2060 MB for no
      // measurable speed (CHANGELOG, 2026-11-29); without it the arena reuses freed chunks.
      enableMemPattern: false,
    };
    if (provider === "cpu" && options.threads && options.threads > 0) sessionOptions.intraOpNumThreads = options.threads;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(file, sessionOptions);
    } catch (error) {
      const reason = firstLine(error).replace(/^\/onnxruntime_src\/\S+:\d+ .*? was false\. /, ""); // keep the sentence, not the assertion
      throw new ProviderError(provider, reason, `${label}: ONNX Runtime${provider === "cpu" ? "" : `'s ${provider} provider`} cannot load it: ${reason}`);
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

/** A session that could not be created, with the provider that was asked for. */
export class ProviderError extends Error {
  override name = "ProviderError";
  constructor(
    readonly provider: ExecutionProvider,
    /** The runtime's reason, without the file. */
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

function providerConfig(provider: ExecutionProvider, deviceId = 0): ort.InferenceSession.ExecutionProviderConfig {
  if (provider === "cuda" || provider === "dml") return { name: provider, deviceId };
  return provider;
}

/**
 * What "auto" tries, best first, on a platform: the vendor GPU providers a runtime for it can have (CUDA needs
 * the runtime's CUDA install and NVIDIA's libraries; DirectML ships in the Windows build; CoreML in the macOS
 * one), then CPU. WebGPU is only used when asked for: on machines without a GPU driver it runs on a software
 * adapter, slower than the CPU provider.
 */
export function autoProviders(platform: NodeJS.Platform = process.platform): ExecutionProvider[] {
  if (platform === "win32") return ["cuda", "dml", "cpu"];
  if (platform === "darwin") return ["coreml", "cpu"];
  return ["cuda", "cpu"];
}

/** How a user gets a provider that did not load, in one sentence (README "Execution providers"). */
export const PROVIDER_HINTS: Record<ExecutionProvider, string> = {
  cpu: "the CPU provider ships in every build",
  cuda: "fetch the runtime's CUDA files (ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node, in the extension's or the CLI's folder) and install NVIDIA's CUDA 12 and cuDNN 9 runtime libraries (README: Execution providers)",
  dml: "DirectML ships in the Windows builds of ONNX Runtime only, and needs a DirectX 12 GPU",
  coreml: "CoreML ships in the macOS builds of ONNX Runtime only",
  webgpu: "WebGPU needs a GPU adapter: a Vulkan driver on Linux, DirectX 12 on Windows, Metal on macOS",
};

/** The ONNX Runtime build this process loaded: its version and the providers it lists (bundled or installable). */
export function runtimeInfo(): { version: string; providers: { name: string; bundled: boolean }[] } {
  return { version: ort.env.versions.node ?? ort.env.versions.common, providers: ort.listSupportedBackends() };
}

/** Whether this runtime build knows the provider at all (DirectML is absent from Linux builds, for one). */
export function providerListed(provider: ExecutionProvider): boolean {
  return provider === "cpu" || ort.listSupportedBackends().some((b) => b.name === provider);
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
