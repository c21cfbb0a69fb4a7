/**
 * EDICT (src/core/methods/edict.ts) against the PyTorch reference (exporter/edict_fixtures.py) on the tiny
 * model, 10 steps at w = 3 (the paper's): the coupled latents after inversion and the latent generated back, held to
 * the whole-trajectory bound; then the method through the engine, the artifact and an edit.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { decodeArtifact, encodeArtifact } from "../../src/core/artifact";
import { Engine } from "../../src/core/engine";
import { savePng } from "../../src/core/image";
import { Run, encodeImage, encodePrompts } from "../../src/core/inversion";
import { METHOD_IMPLEMENTATIONS } from "../../src/core/methods";
import { decodeSafetensors } from "../../src/core/safetensors";
import { NULL_TEXT_SCHEDULES } from "../../src/core/settings";
import { TINY_DIR, TINY_MODEL, checkTrajectory, relativeError, tinyFixtures } from "./helpers/fixtures";

const fx = tinyFixtures();
const edictFx = decodeSafetensors(new Uint8Array(readFileSync(path.join(TINY_DIR, "edict_fixtures.safetensors"))));
const info = JSON.parse(readFileSync(path.join(TINY_DIR, "edict_fixtures.json"), "utf8")) as {
  steps: number;
  guidance: number;
  prompt: string;
  tolerances: { coupled_latents_rel: number; generated_rel: number };
};
const t = (name: string) => edictFx.tensors[name].data as Float32Array;
const dir = mkdtempSync(path.join(tmpdir(), "nti-edict-"));
let engine: Engine;

before(async () => {
  engine = await Engine.open(TINY_MODEL);
});
after(() => engine.close());

test("EDICT's coupled inversion and generation match the reference", async () => {
  const run = new Run(engine.model, engine.model.scheduler(info.steps));
  const z0 = await encodeImage(run, fx.tensors.image.data as Uint8Array);
  assert.ok(relativeError(z0, t("edict_z0")) < fx.meta.tolerances.single_step_latent_rel, "the same encoded image");
  const emb = await encodePrompts(run, [info.prompt, ""]);
  const n = emb.length / 2;
  const settings = { method: "edict" as const, steps: info.steps, guidance: info.guidance, pairing: "consistent" as const, ...NULL_TEXT_SCHEDULES.paper };
  const out = await METHOD_IMPLEMENTATIONS.edict.invert({ run, pivots: [z0], cond: emb.slice(0, n), uncond: emb.slice(n), settings });
  const errors = {
    x_T: relativeError(out.zT!, t("edict_x_T")),
    y_T: relativeError(out.coupledLatent!, t("edict_y_T")),
    x_0: relativeError(out.reconstruction!, t("edict_x_0")),
  };
  checkTrajectory("EDICT x_T (10 steps)", errors.x_T, info.tolerances.coupled_latents_rel);
  checkTrajectory("EDICT y_T (10 steps)", errors.y_T, info.tolerances.coupled_latents_rel);
  checkTrajectory("EDICT x_0 generated back (10 steps)", errors.x_0, info.tolerances.generated_rel);
  process.stdout.write(`# EDICT parity: x_T ${errors.x_T.toExponential(2)}, y_T ${errors.y_T.toExponential(2)}, x_0 ${errors.x_0.toExponential(2)}\n`);
});

test("EDICT through the engine: the artifact keeps y_T, reconstruct retraces, an edit swaps the prompt", async () => {
  const image = path.join(dir, "source.png");
  await savePng(image, fx.tensors.image.data as Uint8Array, 64);
  const result = await engine.invert({ imagePath: image, prompt: info.prompt, settings: { method: "edict", steps: info.steps } });
  const artifact = decodeArtifact(encodeArtifact(result.artifact));
  assert.ok(artifact.coupledLatent && artifact.coupledLatent.length === artifact.zT.length, "y_T stored");
  assert.equal(result.ddimReconstruction, null, "no DDIM-only comparison: EDICT has no pivots");
  const back = await engine.reconstruct(artifact);
  assert.ok(Math.abs(back.psnr - result.psnr) < 1e-6 || back.psnr === result.psnr, `reconstruct ${back.psnr} vs ${result.psnr}`);
  const edit = await engine.edit(artifact, { prompts: ["a blue circle on a white background"] });
  assert.equal(edit.images.length, 2);
  assert.match(edit.notes.join(" "), /EDICT edits generate with the edited prompt/);
  await assert.rejects(engine.attention(artifact), /EDICT .* no cross-attention maps/);
});
