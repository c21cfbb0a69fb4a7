/** The registry of inversion methods: adding one is its file here, its line below, and its METHOD_INFO entry. */
import type { InversionMethod } from "../settings";
import { ddim } from "./ddim";
import { direct } from "./direct";
import { edict } from "./edict";
import { npi } from "./npi";
import { nulltext } from "./nulltext";
import type { Method } from "./types";

export const METHOD_IMPLEMENTATIONS: Record<InversionMethod, Method> = { nulltext, npi, direct, ddim, edict };
export type { Method } from "./types";
