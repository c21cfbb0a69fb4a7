/** Null-text inversion (Mokady et al., CVPR 2023): per step, optimise the null embedding onto the pivot. */
import { nullTextOptimization } from "../inversion";
import type { Method } from "./types";

export const nulltext: Method = {
  async invert({ run, pivots, cond, uncond, settings }) {
    const nt = await nullTextOptimization(run, pivots, cond, uncond, settings);
    return { nullEmbeddings: nt.nullEmbeddings, records: nt.records, reconstruction: nt.reconstruction };
  },
};
