/**
 * SD 2.x's block features end to end against the PyTorch reference: the `sd21-tiny` config (exporter/configs.py:
 * v-prediction, linear projections in and out of the transformer blocks, attention upcast to fp32, heads per
 * level, a GELU text tower, prompts padded with "!") exported by the exporter and read by the engine, with the
 * fixtures of `python -m exporter fixtures --config sd21-tiny`. Same bounds as the SD 1.x parity tests.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { Run, ddimInversion, encodePrompts, nullTextOptimization, nullTextStep, sample } from "../../src/core/inversion";
import { Model } from "../../src/core/model";
import { PARITY_RUNTIME, SD21_TINY_DIR, nullTextSettings, checkTrajectory, maxAbsError, relativeError, tinyFixtures } from "./helpers/fixtures";

const fx = tinyFixtures(SD21_TINY_DIR);
const S = fx.meta.settings.steps;
const TOL = fx.meta.tolerances;
const settings = nullTextSettings(fx);

let model: Model;
let run: Run;
before(async () => {
  model = await Model.open(path.join(SD21_TINY_DIR, "model"), PARITY_RUNTIME);
  run = new Run(model, model.scheduler(S));
});
after(() => model.release());

test("the exported folder says what it is: SD 2.x family, v-prediction, prompts padded with '!'", () => {
  assert.equal(model.manifest.family, "sd2");
  assert.equal(model.family.label, "Stable Diffusion 2.x");
  assert.equal(model.manifest.prediction_type, "v_prediction");
  assert.equal(model.scheduler(S).predictionType, "v_prediction");
  const ids = Array.from(model.tokenizer.encodeBatch([fx.meta.prompt]), Number);
  assert.deepEqual(ids, Array.from(fx.tensors.prompt_ids.data as BigInt64Array, Number), "the engine's tokenizer gives the reference's ids");
  const end = fx.meta.prompt.split(" ").length + 1;
  assert.notEqual(ids[ids.length - 1], ids[end], "the padding is not the end token (SD 1.x pads with it)");
});

test("text encoder: the prompt's and the empty prompt's embeddings", async (t) => {
  const emb = await encodePrompts(run, [fx.meta.prompt, ""]);
  const n = emb.length / 2;
  const errs = [relativeError(emb.subarray(0, n), fx.f32("cond_embedding")), relativeError(emb.subarray(n), fx.f32("uncond_embedding"))];
  t.diagnostic(`embedding relative errors ${errs.map((e) => e.toExponential(2)).join(", ")}`);
  assert.ok(Math.max(...errs) < 1e-5);
});

test("pivotal DDIM inversion with v-prediction: z_0..z_T", async (t) => {
  const pivots = await ddimInversion(run, fx.f32("latent_z0"), fx.f32("cond_embedding"), "consistent");
  let worst = 0;
  for (let i = 0; i <= S; i++) worst = Math.max(worst, relativeError(pivots[i], fx.row("pivots", i)));
  t.diagnostic(`worst pivot relative error ${worst.toExponential(2)}`);
  checkTrajectory("sd21-tiny pivots (inversion, w = 1)", worst, TOL.inversion_latent_rel);
});

test("null-text steps from the reference's latents: losses, iterations, null embedding", async (t) => {
  for (const i of [0, 25, 49]) {
    const start = i === 0 ? fx.f32("uncond_embedding") : fx.row("null_embeddings", i - 1);
    const step = await nullTextStep(run, i, fx.row("null_text_latents", i), fx.row("pivots", S - 1 - i), fx.f32("cond_embedding"), start, settings);
    assert.equal(step.losses.length, fx.meta.losses[i].length, `step ${i}: inner iterations`);
    const lossErr = relativeError(step.losses, fx.meta.losses[i]);
    const embErr = maxAbsError(step.nullEmbedding, fx.row("null_embeddings", i));
    t.diagnostic(`step ${i}: loss rel ${lossErr.toExponential(2)}, null embedding abs ${embErr.toExponential(2)}`);
    assert.ok(lossErr < 1e-3, `step ${i}: loss error ${lossErr}`);
    assert.ok(embErr < TOL.single_step_null_embedding_abs, `step ${i}: null embedding error ${embErr}`);
  }
});

test("all 50 null-text steps from the reference's pivots, and the reconstruction; DDIM-only and NPI too", async (t) => {
  const pivots = Array.from({ length: S + 1 }, (_, i) => fx.row("pivots", i));
  const cond = fx.f32("cond_embedding");
  const counted = new Run(model, model.scheduler(S));
  const nt = await nullTextOptimization(counted, pivots, cond, fx.f32("uncond_embedding"), settings);
  assert.deepEqual(
    nt.records.map((r) => r.losses.length),
    fx.meta.losses.map((l) => l.length),
  );
  const rec = await sample(counted, pivots[S], cond, (i) => nt.nullEmbeddings[i], settings.guidance);
  const recErr = relativeError(rec, fx.f32("reconstruction_latent"));
  const ddimErr = relativeError(await sample(run, pivots[S], cond, () => fx.f32("uncond_embedding"), settings.guidance), fx.f32("ddim_latent"));
  const npiErr = relativeError(await sample(run, pivots[S], cond, () => cond, settings.guidance), fx.f32("npi_latent"));
  t.diagnostic(`reconstruction rel ${recErr.toExponential(2)}, DDIM ${ddimErr.toExponential(2)}, NPI ${npiErr.toExponential(2)}`);
  checkTrajectory("sd21-tiny null-text reconstruction", recErr, TOL.trajectory_latent_rel);
  checkTrajectory("sd21-tiny DDIM-only reconstruction", ddimErr, TOL.trajectory_latent_rel);
  checkTrajectory("sd21-tiny NPI reconstruction", npiErr, TOL.trajectory_latent_rel);
});
