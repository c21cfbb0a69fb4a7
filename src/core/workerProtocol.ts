/** Messages between a host (the extension, tests) and the engine running in a worker thread. */
import type { InversionSettings, StepRecord } from "./artifact";
import type { ScheduleName } from "./engine";
import type { Progress } from "./inversion";
import type { OpenModelOptions } from "./model";
import type { AttentionData, ChangeSummary, EditRecord } from "./output";
import type { EditMode, EditSpec } from "./promptToPrompt";
import type { ExecutionProvider } from "./settings";

export interface InvertJob {
  kind: "invert";
  modelDir: string;
  modelOptions?: OpenModelOptions;
  imagePath: string;
  prompt: string;
  schedule?: ScheduleName;
  settings?: Partial<InversionSettings>;
  outDir: string;
  compareWithDdim?: boolean;
  /** Also record the source prompt's cross-attention maps (one more sampling pass). */
  withAttention?: boolean;
}

/** An edit of a saved inversion: the engine's EditSpec, with the mask as painted in the panel. */
export interface EditJob extends Omit<EditSpec, "userMask"> {
  kind: "edit";
  /** The model to edit with, chosen by the host (an artifact never names the folder to load). */
  modelDir: string;
  modelOptions?: OpenModelOptions;
  artifactPath: string;
  outDir: string;
  /** A painted mask over the model-size source, row-major values in [0, 1] (side x side). */
  paintedMask?: { side: number; values: number[] };
}

export type Job = InvertJob | EditJob;

/** What a finished inversion sends back: where the files are and the figures worth showing. */
export interface InvertSummary {
  kind: "invert";
  prompt: string;
  artifact: string;
  reconstruction: string;
  ddimReconstruction: string | null;
  source: string;
  psnr: number | null;
  ddimPsnr: number | null;
  settings: InversionSettings;
  steps: StepRecord[];
  unetForward: number;
  unetBackward: number;
  seconds: number;
  /** The execution provider the model ran on. */
  provider: ExecutionProvider;
  notes: string[];
  attention: AttentionData | null;
}

export interface EditSummary {
  kind: "edit";
  images: string[];
  /** "What changed" heatmap of the first edit against the source, and its numbers. */
  change: string;
  changeSummary: ChangeSummary;
  /** Its parameters and change, as saved beside it. */
  record: EditRecord;
  attentionMaps: string;
  mask: string | null;
  mode: EditMode;
  prompts: string[];
  sourcePsnr: number | null;
  seconds: number;
  provider: ExecutionProvider;
  notes: string[];
  attention: AttentionData;
}

export type WorkerRequest = { id: number; type: "run"; job: Job } | { id: number; type: "cancel" };

export type WorkerReply =
  | { id: number; type: "progress"; progress: Progress }
  | { id: number; type: "done"; summary: InvertSummary | EditSummary }
  | { id: number; type: "error"; name: string; message: string };
