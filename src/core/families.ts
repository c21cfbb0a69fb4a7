/**
 * Model families: how a family turns prompts into the UNet's conditioning, and which part of it null-text
 * optimises. Stable Diffusion 1.x and 2.x condition the same way here (one text encoder, its
 * `last_hidden_state` [B, L, D] is `encoder_hidden_states`; for 2.x the exporter's text encoder already
 * ends at the penultimate layer, as SD 2 uses it) and differ in their encoder (CLIP ViT-L, D = 768, vs
 * OpenCLIP ViT-H, D = 1024) and usually in v-prediction, which the manifest states. A family with pooled
 * embeddings and size conditioning (SDXL) would be a third entry with its own `encode`.
 */
import { i64 } from "./backend";
import type { Run } from "./inversion";
import type { Model } from "./model";

export type FamilyId = "sd1" | "sd2";

export interface ModelFamily {
  label: string;
  /** Prompts -> the UNet's conditioning for each, stacked [B, ...]. */
  encode(run: Run, prompts: string[]): Promise<Float32Array>;
  /** Values in one prompt's conditioning: the size of one null embedding, the part null-text optimises. */
  conditioningLength(model: Model): number;
}

/** One text encoder's last hidden state is the conditioning, all of it optimised by null-text. */
const textEncoderStates: Omit<ModelFamily, "label"> = {
  async encode(run, prompts) {
    run.checkAborted();
    const { model } = run;
    const ids = model.tokenizer.encodeBatch(prompts);
    const out = await model.withGraph("text_encoder", (encoder) => encoder.run({ input_ids: i64(ids, [prompts.length, model.manifest.tokenizer.max_length]) }));
    return out.last_hidden_state;
  },
  conditioningLength(model) {
    return model.manifest.tokenizer.max_length * model.manifest.text_hidden_size;
  },
};

export const FAMILIES: Record<FamilyId, ModelFamily> = {
  sd1: { label: "Stable Diffusion 1.x", ...textEncoderStates },
  sd2: { label: "Stable Diffusion 2.x", ...textEncoderStates },
};

/** A manifest without `family` was written before it existed: every such folder is SD 1.x-style. */
export const DEFAULT_FAMILY: FamilyId = "sd1";
