/**
 * The one typed protocol between the extension host and the inversion panel's webview. Images travel as
 * webview URIs (asWebviewUri) or data URIs, never as local paths, so the panel also works when the engine
 * runs on a remote machine. Messages from the webview are untrusted: parseWebviewMessage accepts only
 * these shapes, and images are named by ids the host handed out.
 */

// One vocabulary: method labels and the reweight / blend-word syntax come from the settings module.
export { NO_BLEND, methodLabel, parseBlend, parseReweight } from "../core/settings";
import { EDIT_NULLS, type EditNull } from "../core/settings";
export const EDIT_MODE_CHOICES = ["auto", "replace", "refine", "reweight"] as const;
export type EditModeChoice = (typeof EDIT_MODE_CHOICES)[number];
/** The edited branches' null embedding as the form offers it: the inversion method's default, or one named. */
export const EDIT_NULL_CHOICES: readonly ("default" | EditNull)[] = ["default", ...EDIT_NULLS];
export type EditNullChoice = (typeof EDIT_NULL_CHOICES)[number];

export interface PanelImage {
  /** Handed out by the host; the webview refers to images only by it. */
  id: string;
  label: string;
  uri: string;
  /** PSNR against the preprocessed source, dB; null where it does not apply. */
  psnr: number | null;
  /** Only edits are offered for saving into the workspace. */
  savable: boolean;
}

export interface PanelStep {
  timestep: number;
  losses: number[];
  threshold: number;
}

export interface PanelToken {
  position: number;
  token: string;
  /** resolution x resolution, row-major, averaged over steps, layers and heads. */
  map: number[];
}

export interface PanelAttention {
  prompt: string;
  resolution: number;
  tokens: PanelToken[];
}

/** Below this reconstruction PSNR the panel says the inversion is poor, with the number. */
export const POOR_RECONSTRUCTION_DB = 25;
/** Above this mean change outside the blend mask (fraction of full scale) the panel says the edit did not keep the rest. */
export const POOR_EDIT_OUTSIDE_CHANGE = 0.04;

/** An edit as listed in the panel's history: its image, what changed, and how it was asked. */
export interface PanelEdit {
  image: PanelImage;
  change: PanelImage | null;
  changeSummary: { changedShare: number; meanChange: number; meanChangeOutsideMask: number | null } | null;
  prompt: string;
  mode: string;
  cross: number;
  self: number;
  reweight: string;
  /** As the form takes it: "" for the default (the swapped words), "none", or words. */
  blend: string;
  /** The words whose maps made the blend mask ("" without a blend). */
  blendUsed: string;
  /** The edited branches' null embedding (src/core/settings.ts EditNull). */
  editNull: string;
  blendThreshold: number;
}

export type HostToWebview =
  /** `method` is its label; `lossTrace`: the method records a loss per timestep (the plot is shown);
   * `attentionControl`: its edits take Prompt-to-Prompt's controls (mode, steps, reweight, blend, mask). */
  | {
      type: "session";
      title: string;
      prompt: string;
      method: string;
      lossTrace: boolean;
      attentionControl: boolean;
      totalSteps: number;
      running: boolean;
      editable: boolean;
    }
  | { type: "progress"; phase: string; step: number; total: number; timestep?: number; record?: PanelStep }
  | {
      type: "inverted";
      images: PanelImage[];
      steps: PanelStep[];
      seconds: number | null;
      /** The execution provider that ran it; null for an artifact opened from disk (not recorded in it). */
      provider: string | null;
      unetForward: number;
      unetBackward: number;
      notes: string[];
      attention: PanelAttention | null;
      editable: boolean;
      /** Edits found beside the artifact (an artifact opened from disk). */
      history: PanelEdit[];
      /** Handed back by the panel serializer after a window reload to reopen this artifact. */
      restoreKey: string | null;
    }
  | { type: "edited"; edit: PanelEdit; attention: PanelAttention | null; seconds: number; provider: string; notes: string[] }
  | { type: "busy"; busy: boolean; what: string }
  /** A run ("run": the panel shows nothing of an inversion any more) or an edit ("edit": the inversion stays) failed. */
  | { type: "failed"; message: string; scope: "run" | "edit" };

export interface EditRequest {
  prompt: string;
  mode: EditModeChoice;
  cross: number;
  self: number;
  /** "word=factor, ..." as typed. */
  reweight: string;
  /** "word, ..." as typed. */
  blend: string;
  /** Local blend threshold on the normalised word maps (0..1). */
  blendThreshold: number;
  editNull: EditNullChoice;
  /** Painted over the model-size source: side x side values in [0, 1]. */
  mask: { side: number; values: number[] } | null;
}

export type WebviewToHost =
  | { type: "ready" }
  | { type: "edit"; request: EditRequest }
  | { type: "saveImage"; id: string }
  | { type: "cancel" }
  | { type: "reveal" }
  /** What the panel shows after a result arrived: for the output log and the end-to-end tests. */
  | { type: "rendered"; images: number; lossPoints: number; attentionWords: number };

const MAX_TEXT = 1000;
const MAX_MASK_SIDE = 1024;

/** Accepts only well-formed messages; anything else is null (and ignored by the host). */
export function parseWebviewMessage(value: unknown): WebviewToHost | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const m = value as Record<string, unknown>;
  switch (m.type) {
    case "ready":
    case "cancel":
    case "reveal":
      return { type: m.type };
    case "rendered": {
      const count = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v < 100000;
      return count(m.images) && count(m.lossPoints) && count(m.attentionWords)
        ? { type: "rendered", images: m.images as number, lossPoints: m.lossPoints as number, attentionWords: m.attentionWords as number }
        : null;
    }
    case "saveImage":
      return typeof m.id === "string" && /^[a-z0-9-]{1,64}$/.test(m.id) ? { type: "saveImage", id: m.id } : null;
    case "edit": {
      const r = m.request as Record<string, unknown> | null;
      if (typeof r !== "object" || r === null) return null;
      const text = (v: unknown) => typeof v === "string" && v.length <= MAX_TEXT;
      const fraction = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 1;
      if (!text(r.prompt) || !text(r.reweight) || !text(r.blend) || !fraction(r.cross) || !fraction(r.self) || !fraction(r.blendThreshold)) return null;
      if (!EDIT_MODE_CHOICES.includes(r.mode as EditModeChoice)) return null;
      if (!EDIT_NULL_CHOICES.includes(r.editNull as EditNullChoice)) return null;
      let mask: EditRequest["mask"] = null;
      if (r.mask !== null) {
        const k = r.mask as Record<string, unknown> | undefined;
        if (typeof k !== "object" || k === null) return null;
        const side = k.side;
        if (typeof side !== "number" || !Number.isInteger(side) || side < 1 || side > MAX_MASK_SIDE) return null;
        if (!Array.isArray(k.values) || k.values.length !== side * side || !k.values.every((v) => typeof v === "number" && v >= 0 && v <= 1)) return null;
        mask = { side, values: k.values as number[] };
      }
      return {
        type: "edit",
        request: {
          prompt: r.prompt as string,
          mode: r.mode as EditModeChoice,
          cross: r.cross as number,
          self: r.self as number,
          reweight: r.reweight as string,
          blend: r.blend as string,
          blendThreshold: r.blendThreshold as number,
          editNull: r.editNull as EditNullChoice,
          mask,
        },
      };
    }
    default:
      return null;
  }
}
