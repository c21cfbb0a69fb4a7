/** Prints the one "[drift]" line of a whole `npm test` run from the records the parity tests left in NTI_DRIFT_FILE. */
import { readFileSync } from "node:fs";
import { driftLine } from "./fixtures";

const file = process.env.NTI_DRIFT_FILE;
const records = file
  ? readFileSync(file, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line))
  : [];
console.log(driftLine(records) ?? "[drift] no whole-trajectory comparison ran");
