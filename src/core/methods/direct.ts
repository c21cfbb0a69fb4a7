/** Direct Inversion (Ju et al., PnP Inversion, 2023): keep the pivots by adding back, per step, the gap to the guided step. */
import { directOffsets } from "../inversion";
import type { Method } from "./types";

export const direct: Method = {
  async invert({ run, pivots, cond, uncond, settings }) {
    return { nullEmbeddings: [uncond], offsets: await directOffsets(run, pivots, cond, uncond, settings.guidance), records: [] };
  },
};
