/**
 * Prompt-to-Prompt (Hertz et al.) as inputs of the control UNet (`unet/control.onnx`, docs/design.md §2):
 * the token mappers of word swaps (replace) and added words (refine), reweight factors, the per-step
 * injection flags, and local blend. Mappers follow the authors' notebook exactly (replacement mapper
 * and global alignment), so edits match `exporter/reference.py`.
 */
import type { EditNull } from "./settings";
import type { PromptTokenizer } from "./tokenizer";

export type EditMode = "replace" | "refine" | "reweight";
export const EDIT_MODES: EditMode[] = ["replace", "refine", "reweight"];

export class EditError extends Error {
  override name = "EditError";
}

export interface EditSpec {
  /** The edited prompts (at least one); the source prompt comes from the artifact. */
  prompts: string[];
  /** Chosen from the word difference when absent (see chooseMode). */
  mode?: EditMode;
  /** Fraction of the steps with cross-attention injection (default 0.8). */
  crossReplaceSteps?: number;
  /** Fraction of the steps with self-attention injection (default 0.4). */
  selfReplaceSteps?: number;
  /** word -> factor on the edited prompts' cross-attention (e.g. {"red": 3}). */
  reweight?: Record<string, number>;
  /**
   * Local blend: words whose cross-attention makes the edit mask, looked up in every prompt. Absent: the
   * words a word swap changed, at their own positions (so only what the words changed changes); none for
   * refine and reweight, whose added or reweighted words may well mean the whole image. [] turns it off.
   */
  blendWords?: string[];
  blendThreshold?: number;
  /** Fraction of the steps before local blend starts (default 0.2: from step 10 of 50). */
  blendStart?: number;
  /** A user mask at latent size (h*w values in [0, 1]), added to (or replacing) the word mask. */
  userMask?: Float32Array;
  userMaskMode?: "union" | "replace";
  /** The edited branches' null embedding (src/core/settings.ts EditNull); the method's default when absent. */
  editNull?: EditNull;
}

export interface ResolvedEdit {
  prompts: string[]; // [source, ...edits]
  mode: EditMode;
  crossReplaceSteps: number;
  selfReplaceSteps: number;
  reweight: Record<string, number>;
  /** The words that make the blend mask (for display: the changed words when chosen automatically). */
  blendWords: string[];
  /** When the blend words were chosen automatically: per prompt, the indices of its changed words. */
  blendWordIndices: number[][] | null;
  blendThreshold: number;
  blendStart: number;
  userMaskMode: "union" | "replace";
  editNull: EditNull;
}

/** Indices of the words of `edited` that differ from `source`'s at the same place (prompts of equal length). */
export function changedWordIndices(source: string, edited: string): number[] {
  const a = source.split(" ");
  return edited
    .split(" ")
    .map((w, i) => (w !== a[i] ? i : -1))
    .filter((i) => i >= 0);
}

/** Word swap when the prompts have as many words and differ; refine when words were added or removed; reweight for the same prompt. */
export function chooseMode(source: string, edited: string): EditMode {
  const a = source.split(" ");
  const b = edited.split(" ");
  if (source === edited) return "reweight";
  return a.length === b.length ? "replace" : "refine";
}

/** [T, T] row-major: source token -> edited token weights for a word swap (the notebook's get_replacement_mapper_). */
export function replacementMapper(tok: PromptTokenizer, source: string, edited: string): Float32Array {
  const T = tok.maxLength;
  const wx = source.split(" ");
  const wy = edited.split(" ");
  if (wx.length !== wy.length)
    throw new EditError(`replace needs prompts with as many words ("${source}" has ${wx.length}, "${edited}" ${wy.length}): use refine`);
  const changed = wy.map((w, i) => (w !== wx[i] ? i : -1)).filter((i) => i >= 0);
  const src = changed.map((i) => tok.wordTokenIndices(source, i));
  const dst = changed.map((i) => tok.wordTokenIndices(edited, i));
  const mapper = new Float32Array(T * T);
  let i = 0;
  let j = 0;
  let cur = 0;
  while (i < T && j < T) {
    if (cur < src.length && src[cur][0] === i) {
      const s = src[cur];
      const d = dst[cur];
      if (s.length === d.length) s.forEach((si, k) => (mapper[si * T + d[k]] = 1));
      else for (const t of d) for (const si of s) mapper[si * T + t] = 1 / d.length;
      cur += 1;
      i += s.length;
      j += d.length;
    } else if (cur < src.length) {
      mapper[i * T + j] = 1;
      i += 1;
      j += 1;
    } else {
      mapper[j * T + j] = 1; // the notebook's identity tail (indexed by j, as there)
      i += 1;
      j += 1;
    }
  }
  return mapper;
}

/**
 * Refine: global alignment of the two token sequences (the notebook's seq_aligner). Returns, for each
 * edited position, the aligned source position or -1 (a new token), and the blend weights (1 where aligned).
 */
function refinementMapper(tok: PromptTokenizer, source: string, edited: string): { mapper: Int32Array; alphas: Float32Array } {
  const T = tok.maxLength;
  const x = tok.sequence(source);
  const y = tok.sequence(edited);
  const n = x.length;
  const m = y.length;
  const score = Array.from({ length: n + 1 }, () => new Float64Array(m + 1));
  const trace = Array.from({ length: n + 1 }, () => new Int8Array(m + 1));
  for (let j = 1; j <= m; j++) trace[0][j] = 1;
  for (let i = 1; i <= n; i++) trace[i][0] = 2;
  trace[0][0] = 4;
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= m; j++) {
      const left = score[i][j - 1];
      const up = score[i - 1][j];
      const diag = score[i - 1][j - 1] + (x[i - 1] === y[j - 1] ? 1 : -1);
      score[i][j] = Math.max(left, up, diag);
      trace[i][j] = score[i][j] === left ? 1 : score[i][j] === up ? 2 : 3;
    }
  }
  const pairs: [number, number][] = [];
  let i = n;
  let j = m;
  while (i > 0 || j > 0) {
    if (trace[i][j] === 3) {
      i -= 1;
      j -= 1;
      pairs.push([j, i]);
    } else if (trace[i][j] === 1) {
      j -= 1;
      pairs.push([j, -1]);
    } else if (trace[i][j] === 2) {
      i -= 1;
    } else {
      break;
    }
  }
  pairs.reverse();
  const mapper = new Int32Array(T);
  const alphas = new Float32Array(T).fill(1);
  pairs.forEach(([, srcPos], k) => {
    mapper[k] = srcPos;
    alphas[k] = srcPos === -1 ? 0 : 1;
  });
  for (let k = pairs.length; k < T; k++) mapper[k] = m + (k - pairs.length);
  return { mapper, alphas };
}

/** The control UNet's per-edit inputs that stay fixed over the steps: mapper [K-1,T,T], alphas [K-1,T], reweight [K,T]. */
export interface ControlTensors {
  mapper: Float32Array;
  alphas: Float32Array;
  reweight: Float32Array;
  /** [K, T]: 1 on the tokens of the blend words, per prompt. */
  blendTokens: Float32Array | null;
}

export function controlTensors(tok: PromptTokenizer, edit: ResolvedEdit): ControlTensors {
  const T = tok.maxLength;
  const [source, ...edits] = edit.prompts;
  const k = edit.prompts.length;
  const mapper = new Float32Array((k - 1) * T * T);
  const alphas = new Float32Array((k - 1) * T).fill(1);
  edits.forEach((e, b) => {
    if (edit.mode === "replace") {
      mapper.set(replacementMapper(tok, source, e), b * T * T);
    } else {
      const r = refinementMapper(tok, source, e);
      // index mapper -> one-hot matrix: source position x feeds edited position y
      r.mapper.forEach((x, y) => {
        if (x >= 0 && x < T) mapper[b * T * T + x * T + y] = 1;
      });
      alphas.set(r.alphas, b * T);
    }
  });
  const reweight = new Float32Array(k * T).fill(1);
  for (const [word, factor] of Object.entries(edit.reweight)) {
    let found = false;
    edits.forEach((e, b) => {
      for (const pos of tok.wordIndices(e, word)) {
        reweight[(b + 1) * T + pos] = factor;
        found = true;
      }
    });
    if (!found) throw new EditError(`reweight word "${word}" is not a word of the edited prompt${edits.length > 1 ? "s" : ""}`);
  }
  // Per prompt, the positions of the words whose maps make the blend mask: chosen by resolveEdit, or every
  // place a named word stands.
  let blendAt = edit.blendWordIndices;
  if (!blendAt && edit.blendWords.length) {
    const words = edit.prompts.map((p) => p.split(" "));
    const missing = edit.blendWords.find((w) => !words.some((ws) => ws.includes(w)));
    if (missing !== undefined) throw new EditError(`blend word "${missing}" is in none of the prompts`);
    blendAt = words.map((ws) => ws.flatMap((w, i) => (edit.blendWords.includes(w) ? [i] : [])));
  }
  let blendTokens: Float32Array | null = null;
  if (blendAt) {
    blendTokens = new Float32Array(k * T);
    blendAt.forEach((indices, b) => {
      for (const i of indices) for (const pos of tok.wordTokenIndices(edit.prompts[b], i)) blendTokens![b * T + pos] = 1;
    });
  }
  return { mapper, alphas, reweight, blendTokens };
}

/** Injection flags of step i of `steps` (the notebook's cross_replace_alpha and self-replace window). */
export function stepFlags(edit: ResolvedEdit, i: number, steps: number): { cross: number; self: number } {
  const crossEnd = Math.floor(edit.crossReplaceSteps * (steps + 1));
  const selfEnd = Math.floor(steps * edit.selfReplaceSteps);
  return { cross: i < crossEnd ? 1 : 0, self: i < selfEnd ? 1 : 0 };
}

/**
 * Local blend (the notebook's LocalBlend, with its x_t defect fixed: the mask is sized from the latent
 * being blended). `mapSum` is the running sum over steps of the control UNet's attention maps [K, r, r, T];
 * returns the mask [K, h, w] (row 0 the source's own) after applying it to `latents` [K, C, h, w] in place:
 * outside the mask every edit branch is reset to the source branch.
 */
export interface LocalBlendOptions {
  /** K: prompts in the batch (row 0 the source). */
  batch: number;
  /** Latent channels C and side h = w. */
  channels: number;
  size: number;
  /** Running sum of the attention maps [K, r, r, T], or null when no word blends. */
  mapSum: Float32Array | null;
  mapResolution: number;
  tokens: number;
  /** Per prompt and token, 1 where the token is a blend word [K, T]. */
  blendTokens: Float32Array | null;
  threshold: number;
  /** A painted mask at latent size, added to the word mask or replacing it. */
  userMask: Float32Array | null;
  userMaskMode: "union" | "replace";
}

export function localBlend(latents: Float32Array, options: LocalBlendOptions): Float32Array | null {
  const { batch: k, channels, size, mapSum, mapResolution, tokens, blendTokens, threshold, userMask, userMaskMode } = options;
  const plane = size * size;
  let mask: Float32Array | null = null;
  if (blendTokens && mapSum && !(userMask && userMaskMode === "replace")) {
    mask = new Float32Array(k * plane);
    const r = mapResolution;
    const word = new Float32Array(r * r);
    const pooled = new Float32Array(r * r);
    for (let b = 0; b < k; b++) {
      for (let p = 0; p < r * r; p++) {
        let s = 0;
        for (let t = 0; t < tokens; t++) s += mapSum[(b * r * r + p) * tokens + t] * blendTokens[b * tokens + t];
        word[p] = s;
      }
      // 3x3 max pool, stride 1, padding 1
      for (let y = 0; y < r; y++) {
        for (let x = 0; x < r; x++) {
          let best = -Infinity;
          for (let dy = -1; dy <= 1; dy++) {
            for (let dx = -1; dx <= 1; dx++) {
              const yy = y + dy;
              const xx = x + dx;
              if (yy >= 0 && yy < r && xx >= 0 && xx < r) best = Math.max(best, word[yy * r + xx]);
            }
          }
          pooled[y * r + x] = best;
        }
      }
      // nearest upsample to the latent size (F.interpolate's default), then normalise by the maximum
      let max = 0;
      const up = mask.subarray(b * plane, (b + 1) * plane);
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const v = pooled[Math.floor((y * r) / size) * r + Math.floor((x * r) / size)];
          up[y * size + x] = v;
          max = Math.max(max, v);
        }
      }
      for (let p = 0; p < plane; p++) up[p] = max > 0 && up[p] / max > threshold ? 1 : 0;
    }
    // union with the source's mask: what the source words covered may change too
    for (let b = 1; b < k; b++) for (let p = 0; p < plane; p++) mask[b * plane + p] = Math.max(mask[b * plane + p], mask[p]);
  }
  if (userMask) {
    const withUser = mask ?? new Float32Array(k * plane);
    for (let b = 0; b < k; b++) for (let p = 0; p < plane; p++) withUser[b * plane + p] = Math.max(withUser[b * plane + p], userMask[p]);
    mask = withUser;
  }
  if (!mask) return null;
  const item = channels * plane;
  for (let b = 1; b < k; b++) {
    for (let c = 0; c < channels; c++) {
      for (let p = 0; p < plane; p++) {
        const at = b * item + c * plane + p;
        const src = latents[c * plane + p];
        latents[at] = src + mask[b * plane + p] * (latents[at] - src);
      }
    }
  }
  return mask;
}
