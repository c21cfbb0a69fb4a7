/**
 * The one typed protocol between the extension host and the inversion panel's webview. Images travel as
 * webview URIs (asWebviewUri), never as local paths, so the panel also works when the engine runs on a
 * remote machine.
 */

export const METHOD_LABELS: Record<string, string> = { nulltext: "null-text", npi: "NPI", direct: "Direct Inversion", ddim: "DDIM" };

export interface PanelImage {
  label: string;
  uri: string;
  /** PSNR against the preprocessed source, dB; null for the source itself. */
  psnr: number | null;
}

export interface PanelStep {
  timestep: number;
  losses: number[];
  threshold: number;
}

export type HostToWebview =
  | { type: "started"; prompt: string; image: string; method: string; totalSteps: number }
  | { type: "progress"; phase: string; step: number; total: number; timestep?: number; record?: PanelStep }
  | { type: "result"; prompt: string; method: string; images: PanelImage[]; steps: PanelStep[]; seconds: number; unetForward: number; unetBackward: number; notes: string[] }
  | { type: "failed"; message: string };

export type WebviewToHost = { type: "ready" } | { type: "reveal"; which: "artifact" | "reconstruction" };

const HOST_TYPES = new Set(["ready", "reveal"]);

/** Messages from the webview are untrusted input: accept only the known shapes. */
export function parseWebviewMessage(value: unknown): WebviewToHost | null {
  if (typeof value !== "object" || value === null) return null;
  const m = value as Record<string, unknown>;
  if (typeof m.type !== "string" || !HOST_TYPES.has(m.type)) return null;
  if (m.type === "reveal" && m.which !== "artifact" && m.which !== "reconstruction") return null;
  return m as WebviewToHost;
}
