/** The one settings vocabulary (src/core/settings.ts): the same rules for requests, artifact headers, the CLI and the panel. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { test } from "node:test";
import { METHOD_INFO, METHODS, NULL_TEXT_SCHEDULES, checkInversionSettings, methodLabel, parseReweight, parseWords } from "../../src/core/settings";
import { parseReweight as panelParseReweight } from "../../src/shared/protocol";
import { ROOT } from "./helpers/fixtures";

const fail = (message: string): never => {
  throw new Error(message);
};
const valid = { method: "nulltext", steps: 50, guidance: 7.5, pairing: "consistent", ...NULL_TEXT_SCHEDULES.paper };

test("every method has its metadata; only null-text needs the gradient graph and records a loss", () => {
  assert.deepEqual(METHODS, ["nulltext", "npi", "direct", "ddim", "edict"]);
  // which methods have each flag (set) or lack it (unset)
  const methodsWhere = (flag: "pivots" | "coupledLatent" | "promptToPrompt" | "lossTrace" | "directOffsets", set = true) =>
    METHODS.filter((m) => METHOD_INFO[m][flag] === set);
  assert.deepEqual(methodsWhere("pivots", false), ["edict"]);
  assert.deepEqual(methodsWhere("coupledLatent"), ["edict"]);
  assert.deepEqual(methodsWhere("promptToPrompt", false), ["edict"]);
  assert.deepEqual(methodsWhere("lossTrace"), ["nulltext"]);
  assert.deepEqual(methodsWhere("directOffsets"), ["direct"]);
  assert.deepEqual(METHOD_INFO.nulltext.extraGraphs, ["null_text_grad"]);
  assert.equal(methodLabel("direct"), "Direct Inversion");
  assert.equal(methodLabel("edict-from-the-future"), "edict-from-the-future");
});

test("one validator: ranges named in one line, steps capped by the model's timesteps", () => {
  assert.equal(checkInversionSettings({ ...valid }, fail).steps, 50);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ steps: 0 }, /steps must be an integer from 1 to 1000, got 0/],
    [{ steps: 2.5 }, /steps must be an integer/],
    [{ guidance: 50.5 }, /guidance must be a number from 1 to 50, got 50.5/],
    [{ guidance: "7" }, /guidance must be a number from 1 to 50, got "7"/],
    [{ innerSteps: 0 }, /inner steps must be an integer from 1 to 1000/],
    [{ learningRate: 0 }, /learning rate must be a number from above 0 to 10, got 0/],
    [{ earlyStop: -1 }, /early-stop tolerance must be a number from 0/],
    [{ method: "magic" }, /method "magic" is not one of nulltext, npi, direct, ddim, edict/],
    [{ innerLoop: "fast" }, /inner loop must be one of notebook, lean, got "fast"/],
    [{ pairing: "x" }, /pairing must be one of consistent, notebook, got "x"/],
  ];
  for (const [change, expected] of cases) assert.throws(() => checkInversionSettings({ ...valid, ...change }, fail), expected);
  assert.throws(() => checkInversionSettings({ ...valid, steps: 200 }, fail, 100), /steps must be an integer from 1 to 100, got 200/);
});

test("one reweight syntax for the CLI and the panel: red=3=4 is refused by both", () => {
  assert.equal(panelParseReweight, parseReweight);
  assert.deepEqual(parseReweight("red=3, big = -1"), { red: 3, big: -1 });
  for (const bad of ["red=3=4", "red=", "=3", "red=x", "red"]) assert.throws(() => parseReweight(bad), /reweight takes word=factor/);
  assert.deepEqual(parseWords("square, circle  background"), ["square", "circle", "background"]);
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", path.join(ROOT, "src/cli/nti.ts"), "edit", "x.nti", "--prompt", "a red circle", "--reweight", "red=3=4"],
    { cwd: ROOT, encoding: "utf8" },
  );
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^nti: --reweight takes word=factor, got "red=3=4"/);
});
