/** DDIM inversion alone: the baseline that shows why the optimisation exists. */
import type { Method } from "./types";

export const ddim: Method = {
  async invert({ uncond }) {
    return { nullEmbeddings: [uncond], records: [] };
  },
};
