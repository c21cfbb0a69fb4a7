/** Negative-prompt inversion (Miyake et al., 2023): the null embedding is the prompt's own; no optimisation. */
import type { Method } from "./types";

export const npi: Method = {
  async invert({ cond }) {
    return { nullEmbeddings: [cond], records: [] };
  },
};
