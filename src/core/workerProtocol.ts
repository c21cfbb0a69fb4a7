/** Messages between a host (extension, tests) and the engine running in a worker thread. */
import type { InversionSettings, StepRecord } from "./artifact";
import type { Progress } from "./inversion";
import type { OpenModelOptions } from "./model";

export interface InvertJob {
  modelDir: string;
  modelOptions?: OpenModelOptions;
  imagePath: string;
  prompt: string;
  settings?: Partial<InversionSettings>;
  outDir: string;
  compareWithDdim?: boolean;
}

/** What a finished inversion sends back: where the files are and the figures worth showing. */
export interface InvertSummary {
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
  notes: string[];
}

export type WorkerRequest =
  | { id: number; type: "invert"; job: InvertJob }
  | { id: number; type: "cancel" };

export type WorkerReply =
  | { id: number; type: "progress"; progress: Progress }
  | { id: number; type: "done"; summary: InvertSummary }
  | { id: number; type: "error"; name: string; message: string };
