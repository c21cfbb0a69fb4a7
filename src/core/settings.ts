/**
 * The settings vocabulary, in one place: the inversion methods and what each needs and stores, the
 * null-text loop's options and named schedules, every setting's range, one validator for them (used by
 * the engine for requests and by the artifact reader for headers), and the reweight syntax. Free of Node
 * APIs: the webview bundle imports it too.
 */
import type { InversionPairing } from "./scheduler";

/** The graphs beyond the core four that a method may need (names of src/core/manifest.ts GraphName). */
type ExtraGraph = "null_text_grad" | "unet_control";

export type InversionMethod = "nulltext" | "npi" | "direct" | "ddim" | "edict";

/** What a method is to the rest of the program (docs/design.md §1). */
export interface MethodInfo {
  /** Shown in the panel and the CLI's summaries. */
  label: string;
  /** Graphs it needs beyond the text encoder, the VAE and the UNet. */
  extraGraphs: ExtraGraph[];
  /** It records a loss per timestep (the panel's plot, `--plot`). */
  lossTrace: boolean;
  /** Its artifact stores one null embedding per step (else one for all steps). */
  perStepNullEmbeddings: boolean;
  /** Its artifact stores Direct Inversion's per-step latent offsets. */
  directOffsets: boolean;
  /** It starts from the pivots of DDIM inversion (and so has a DDIM-only comparison). */
  pivots: boolean;
  /** Its artifact stores a second, coupled latent (EDICT's y_T). */
  coupledLatent: boolean;
  /** Its edits use Prompt-to-Prompt's attention control (and its inversions have attention maps). */
  promptToPrompt: boolean;
  /** The null embedding its edits give the edited branches by default (see EditNull). */
  editNull: EditNull;
}

/**
 * The null embedding of an edit's edited branches. "inverted": the inversion's own, in every branch (the
 * null-text paper's editing); "empty": the empty prompt's, the source branch alone keeping the inversion's
 * (Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code", ICLR 2024: null-text's
 * embeddings are fitted to the source prompt's trajectory, and under a changed prompt guidance amplifies
 * that fit into a drift of the whole image; measured in exporter/shapes/report.py).
 */
export type EditNull = "inverted" | "empty";
export const EDIT_NULLS: EditNull[] = ["inverted", "empty"];

const DDIM_BASED = { pivots: true, coupledLatent: false, promptToPrompt: true };

export const METHOD_INFO: Record<InversionMethod, MethodInfo> = {
  nulltext: {
    label: "null-text",
    extraGraphs: ["null_text_grad"],
    lossTrace: true,
    perStepNullEmbeddings: true,
    directOffsets: false,
    editNull: "empty",
    ...DDIM_BASED,
  },
  // NPI's null is the source prompt, in its paper's edits too; Direct Inversion's and DDIM's are the empty prompt's
  npi: { label: "NPI", extraGraphs: [], lossTrace: false, perStepNullEmbeddings: false, directOffsets: false, editNull: "inverted", ...DDIM_BASED },
  direct: {
    label: "Direct Inversion",
    extraGraphs: [],
    lossTrace: false,
    perStepNullEmbeddings: false,
    directOffsets: true,
    editNull: "inverted",
    ...DDIM_BASED,
  },
  ddim: { label: "DDIM", extraGraphs: [], lossTrace: false, perStepNullEmbeddings: false, directOffsets: false, editNull: "inverted", ...DDIM_BASED },
  edict: {
    label: "EDICT",
    extraGraphs: [],
    lossTrace: false,
    perStepNullEmbeddings: false,
    directOffsets: false,
    pivots: false,
    coupledLatent: true,
    promptToPrompt: false,
    editNull: "inverted",
  },
};
export const METHODS = Object.keys(METHOD_INFO) as InversionMethod[];

/** A method's label, or the id itself for one this version does not know. */
export function methodLabel(method: string): string {
  return (METHOD_INFO as Record<string, MethodInfo | undefined>)[method]?.label ?? method;
}

/**
 * How a null-text step's inner loop runs (src/core/inversion.ts): "notebook", the authors' order; "lean",
 * the loss checked before the Adam step so the loop ends on an evaluated embedding.
 */
export type InnerLoop = "notebook" | "lean";
const INNER_LOOPS: InnerLoop[] = ["notebook", "lean"];

/** The first step's starting null embedding: the empty prompt's (the paper) or the prompt's own (NPI). */
export type NullInit = "empty" | "prompt";
const NULL_INITS: NullInit[] = ["empty", "prompt"];

const PAIRINGS: InversionPairing[] = ["consistent", "notebook"];

export interface InversionSettings {
  method: InversionMethod;
  steps: number;
  guidance: number;
  innerSteps: number;
  learningRate: number;
  earlyStop: number;
  earlyStopSlope: number;
  pairing: InversionPairing;
  innerLoop: InnerLoop;
  nullInit: NullInit;
}

/**
 * Named null-text schedules; explicit settings override them.
 * - "paper": docs/design.md §1, the authors' notebook (notebook inner loop from the empty prompt, <= 10 iterations).
 * - "fast": the lean inner loop from the prompt's embedding, <= 3 iterations, half the early-stop threshold.
 *   On 20 held-out shapes-tiny scenes it kept the paper's mean PSNR (34.01 vs 33.84 dB) with 5.9x fewer UNet
 *   passes than the reference (bench/results/schedule.md).
 */
export type ScheduleName = "paper" | "fast";
/**
 * ONNX Runtime execution providers the engine can ask for; "auto" picks the best the platform's runtime can
 * load (src/core/backend.ts: autoProviders), CPU last.
 */
export const PROVIDER_CHOICES = ["auto", "cpu", "cuda", "dml", "coreml", "webgpu"] as const;
export type ProviderChoice = (typeof PROVIDER_CHOICES)[number];
export type ExecutionProvider = Exclude<ProviderChoice, "auto">;

export const SCHEDULE_NAMES: ScheduleName[] = ["paper", "fast"];
type ScheduleFields = Pick<InversionSettings, "innerLoop" | "nullInit" | "innerSteps" | "learningRate" | "earlyStop" | "earlyStopSlope">;
export const NULL_TEXT_SCHEDULES: Record<ScheduleName, ScheduleFields> = {
  paper: { innerLoop: "notebook", nullInit: "empty", innerSteps: 10, learningRate: 1e-2, earlyStop: 1e-5, earlyStopSlope: 2e-5 },
  fast: { innerLoop: "lean", nullInit: "prompt", innerSteps: 3, learningRate: 1e-2, earlyStop: 5e-6, earlyStopSlope: 1e-5 },
};

/** Every numeric setting's range (steps are also capped by the model's training timesteps), and its name in messages. */
const RANGES = {
  steps: { min: 1, max: 1000, integer: true, name: "steps" },
  guidance: { min: 1, max: 50, integer: false, name: "guidance" },
  innerSteps: { min: 1, max: 1000, integer: true, name: "inner steps" },
  learningRate: { min: Number.MIN_VALUE, max: 10, integer: false, name: "learning rate" },
  earlyStop: { min: 0, max: 1e6, integer: false, name: "early-stop tolerance" },
  earlyStopSlope: { min: 0, max: 1e6, integer: false, name: "early-stop slope" },
} as const;

/**
 * Checks a complete settings object (a request after defaults, or an artifact header's) and returns it
 * typed; `fail` receives a one-line message naming the setting. `maxSteps` is the model's timesteps when
 * known.
 */
export function checkInversionSettings(
  value: Record<string, unknown>,
  fail: (message: string) => never,
  maxSteps: number = RANGES.steps.max,
): InversionSettings {
  if (!METHODS.includes(value.method as InversionMethod)) fail(`method ${JSON.stringify(value.method)} is not one of ${METHODS.join(", ")}`);
  for (const [key, range] of Object.entries(RANGES)) {
    const v = value[key];
    const max = key === "steps" ? Math.min(range.max, maxSteps) : range.max;
    const what = range.integer ? "an integer" : "a number";
    if (typeof v !== "number" || !Number.isFinite(v) || v < range.min || v > max || (range.integer && !Number.isInteger(v))) {
      fail(`${range.name} must be ${what} from ${range.min === Number.MIN_VALUE ? "above 0" : range.min} to ${max}, got ${JSON.stringify(v)}`);
    }
  }
  const oneOf = (name: string, v: unknown, allowed: readonly string[]) => {
    if (!allowed.includes(v as string)) fail(`${name} must be one of ${allowed.join(", ")}, got ${JSON.stringify(v)}`);
  };
  oneOf("pairing", value.pairing, PAIRINGS);
  oneOf("inner loop", value.innerLoop, INNER_LOOPS);
  oneOf("null init", value.nullInit, NULL_INITS);
  return value as unknown as InversionSettings;
}

/** "red=3, big=-1" -> {red: 3, big: -1}; throws a one-line Error on a malformed item ("red=3=4", "red=", "=3"). */
export function parseReweight(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    const [word, factor, extra] = item.split("=").map((s) => s.trim());
    const n = Number(factor);
    if (!word || factor === undefined || factor === "" || extra !== undefined || !Number.isFinite(n))
      throw new Error(`reweight takes word=factor, got "${item}"`);
    out[word] = n;
  }
  return out;
}

/** What turns local blend off where words are asked for (the CLI's --blend, the panel's field). */
export const NO_BLEND = "none";

/**
 * Local-blend words as typed: separated by commas or spaces. Nothing typed means the default (the words a
 * word swap changed, src/core/promptToPrompt.ts EditSpec.blendWords): undefined; "none" means no blend: [].
 */
export function parseBlend(text: string | undefined): string[] | undefined {
  if (text === undefined || !text.trim()) return undefined;
  return text.trim() === NO_BLEND ? [] : parseWords(text);
}

/** Words as typed: separated by commas or spaces. */
export function parseWords(text: string): string[] {
  return text
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}
