/**
 * Prompt-to-Prompt editing of an inversion: guided DDIM from z_T with the stored per-step null
 * embeddings, for the batch [source prompt, edited prompts...], through the control UNet, with local
 * blend after each step. The source branch stays the reconstruction; the edit branches change only
 * where their words do.
 */
import { f32, scalar, timestepFeed } from "./backend";
import { Run } from "./inversion";
import { ControlTensors, EDIT_MODES, EditError, EditSpec, ResolvedEdit, changedWordIndices, chooseMode, localBlend, stepFlags } from "./promptToPrompt";
import { ddimStep, guide } from "./scheduler";
import { EDIT_NULLS, type EditNull } from "./settings";

/** `editNull`: the inversion method's default for the edited branches' null embedding when the prompt changes. */
export function resolveEdit(source: string, spec: EditSpec, editNull: EditNull = "inverted"): ResolvedEdit {
  if (!spec.prompts.length) throw new EditError("no edited prompt given");
  for (const p of spec.prompts) if (!p.trim()) throw new EditError("an edited prompt is empty");
  const modes = spec.prompts.map((p) => chooseMode(source, p));
  const mode = spec.mode ?? (modes.every((m) => m === modes[0]) ? modes[0] : "refine");
  if (!EDIT_MODES.includes(mode)) throw new EditError(`mode "${mode}" is not one of ${EDIT_MODES.join(", ")}`);
  if (spec.editNull !== undefined && !EDIT_NULLS.includes(spec.editNull))
    throw new EditError(`edit null "${spec.editNull}" is not one of ${EDIT_NULLS.join(", ")}`);
  if (mode === "replace") {
    const n = source.split(" ").length;
    const bad = spec.prompts.find((p) => p.split(" ").length !== n);
    if (bad !== undefined)
      throw new EditError(`replace swaps words one for one, but "${bad}" has ${bad.split(" ").length} words and the source ${n}: use refine`);
  }
  const fraction = (v: number | undefined, fallback: number, name: string) => {
    const x = v ?? fallback;
    if (!(x >= 0 && x <= 1)) throw new EditError(`${name} must be a fraction from 0 to 1, got ${x}`);
    return x;
  };
  for (const [word, factor] of Object.entries(spec.reweight ?? {})) {
    if (!Number.isFinite(factor)) throw new EditError(`reweight factor of "${word}" is not a number`);
  }
  // Local blend on the swapped words unless told otherwise (Hertz et al.'s local blend, on the words the
  // edit changed): the source's changed words and each edit's, at their own positions.
  let blendWords = spec.blendWords ?? [];
  let blendWordIndices: number[][] | null = null;
  if (spec.blendWords === undefined && mode === "replace") {
    const changed = spec.prompts.map((p) => changedWordIndices(source, p));
    const inSource = [...new Set(changed.flat())].sort((a, b) => a - b);
    blendWordIndices = [inSource, ...changed];
    const words = [source, ...spec.prompts].flatMap((p, b) => blendWordIndices![b].map((i) => p.split(" ")[i]));
    blendWords = [...new Set(words)];
  }
  return {
    prompts: [source, ...spec.prompts],
    mode,
    crossReplaceSteps: fraction(spec.crossReplaceSteps, 0.8, "cross-replace steps"),
    selfReplaceSteps: fraction(spec.selfReplaceSteps, 0.4, "self-replace steps"),
    reweight: spec.reweight ?? {},
    blendWords,
    blendWordIndices,
    blendThreshold: fraction(spec.blendThreshold, 0.3, "blend threshold"),
    blendStart: fraction(spec.blendStart, 0.2, "blend start"),
    userMaskMode: spec.userMaskMode ?? "union",
    // a reweight keeps the prompt the nulls were fitted to: the inversion's nulls stay right in every branch
    editNull: spec.editNull ?? (mode === "reweight" ? "inverted" : editNull),
  };
}

export interface EditSampleResult {
  /** [K, C, h, w]: row 0 the source branch. */
  latents: Float32Array;
  /** Cross-attention maps averaged over the steps, [K, r, r, T] (before control, as the reference stores them). */
  maps: Float32Array;
  /** The last local-blend mask [K, h, w], or null without local blend. */
  mask: Float32Array | null;
}

export async function editSample(
  run: Run,
  edit: ResolvedEdit,
  control: ControlTensors,
  zT: Float32Array,
  conds: Float32Array,
  /** The null embedding of step i for branch b (0: the source). */
  nullAt: (i: number, branch: number) => Float32Array,
  guidance: number,
  offsets: Float32Array[] | undefined,
  userMask: Float32Array | null,
): Promise<EditSampleResult> {
  const { model, scheduler: s } = run;
  const m = model.manifest;
  const k = edit.prompts.length;
  const [, c, h, w] = model.latentDims;
  const latentLength = c * h * w;
  const T = m.tokenizer.max_length;
  const D = m.text_hidden_size;
  const r = m.attention.map_resolution;
  const graph = await model.graph("unet_control");
  const steps = s.timesteps.length;
  const blendFrom = Math.floor(edit.blendStart * steps);
  const fixed = {
    mapper: f32(control.mapper, [k - 1, T, T]),
    alphas: f32(control.alphas, [k - 1, T]),
    reweight: f32(control.reweight, [k, T]),
  };
  let latents: Float32Array = new Float32Array(k * latentLength);
  for (let b = 0; b < k; b++) latents.set(zT, b * latentLength);
  const mapSum = new Float32Array(k * r * r * T);
  const hidden = new Float32Array(2 * k * T * D);
  hidden.set(conds, k * T * D);
  let mask: Float32Array | null = null;
  for (let i = 0; i < steps; i++) {
    run.checkAborted();
    const t = s.timesteps[i];
    for (let b = 0; b < k; b++) hidden.set(nullAt(i, b), b * T * D);
    const sample = new Float32Array(2 * k * latentLength);
    sample.set(latents);
    sample.set(latents, k * latentLength);
    const flags = stepFlags(edit, i, steps);
    const out = await graph.run({
      sample: f32(sample, [2 * k, c, h, w]),
      timestep: timestepFeed(t),
      encoder_hidden_states: f32(hidden, [2 * k, T, D]),
      mapper: fixed.mapper,
      alphas: fixed.alphas,
      reweight: fixed.reweight,
      cross_flag: scalar(flags.cross),
      self_flag: scalar(flags.self),
    });
    run.unetForward += 2 * k;
    const noise = out.noise_pred;
    const maps = out.attention_maps;
    for (let q = 0; q < mapSum.length; q++) mapSum[q] += maps[q];
    const guided = guide(noise.subarray(0, k * latentLength), noise.subarray(k * latentLength), guidance);
    latents = ddimStep(guided, latents, s.alpha(t), s.alpha(s.previousTimestep(t)), s.predictionType);
    const offset = offsets?.[i];
    if (offset) for (let q = 0; q < latentLength; q++) latents[q] += offset[q]; // the source branch only
    if (i + 1 > blendFrom) {
      mask =
        localBlend(latents, {
          batch: k,
          channels: c,
          size: h,
          mapSum: control.blendTokens ? mapSum : null,
          mapResolution: r,
          tokens: T,
          blendTokens: control.blendTokens,
          threshold: edit.blendThreshold,
          userMask,
          userMaskMode: edit.userMaskMode,
        }) ?? mask;
    }
    run.progress({ phase: "edit", step: i + 1, total: steps, timestep: t });
  }
  const average = mapSum.map((v) => v / steps);
  return { latents, maps: average, mask };
}
