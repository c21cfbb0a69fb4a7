/** The DDIM scheduler against diffusers' DDIMScheduler (test/fixtures/scheduler.json, exporter/scheduler_fixtures.py). */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, test } from "node:test";
import { DdimScheduler, SchedulerConfig, ddimStep } from "../../src/core/scheduler";
import { ROOT, relativeError } from "./helpers/fixtures";

const fixture = JSON.parse(readFileSync(path.join(ROOT, "test/fixtures/scheduler.json"), "utf8"));
const sample = Float32Array.from(fixture.sample as number[]);
const modelOutput = Float32Array.from(fixture.model_output as number[]);

for (const [name, entry] of Object.entries<any>(fixture.configs)) {
  describe(`DDIM vs diffusers: ${name}`, () => {
    const config: SchedulerConfig = { prediction_type: "epsilon", ...entry.config };
    for (const [steps, run] of Object.entries<any>(entry.runs)) {
      test(`${steps} steps: timesteps, alphas and step()`, () => {
        const s = new DdimScheduler(config, Number(steps));
        assert.deepEqual(s.timesteps, run.timesteps);
        for (const [i, a] of Object.entries<number>(entry.alphas_cumprod)) assert.ok(Math.abs(s.alphasCumprod[Number(i)] - a) <= 5e-7 * a, `alpha ${i}`); // exact for scaled_linear; torch.linspace rounding differs by ~2e-7 for linear
        assert.ok(Math.abs(s.finalAlphaCumprod - entry.final_alpha_cumprod) < 1e-7);
        for (const [t, expected] of Object.entries<number[]>(run.steps)) {
          const ts = Number(t);
          const out = ddimStep(modelOutput, sample, s.alpha(ts), s.alpha(s.previousTimestep(ts)), s.predictionType);
          const err = relativeError(out, expected);
          assert.ok(err < 1e-5, `t=${t}: relative error ${err}`);
        }
      });
    }
  });
}

describe("inversion pairing", () => {
  const config: SchedulerConfig = { prediction_type: "epsilon", ...fixture.configs.sd15_epsilon_leading.config };
  const s = new DdimScheduler(config, 50);

  test("consistent: the UNet sees the level of the latent it is given; notebook: the next level (#64/#79)", () => {
    const consistent = s.inversionSteps("consistent");
    const notebook = s.inversionSteps("notebook");
    assert.deepEqual(consistent[0], { from: -1, to: 1, unetTimestep: 0 });
    assert.deepEqual(consistent[1], { from: 1, to: 21, unetTimestep: 1 });
    assert.deepEqual(consistent[49], { from: 961, to: 981, unetTimestep: 961 });
    assert.deepEqual(notebook[1], { from: 1, to: 21, unetTimestep: 21 });
    // the inversion's last level is the sampler's first timestep
    assert.equal(consistent[49].to, s.timesteps[0]);
  });

  for (const prediction of ["epsilon", "v_prediction"] as const) {
    test(`${prediction}: a step up then down with the same model output returns the latent`, () => {
      const up = ddimStep(modelOutput, sample, s.alpha(1), s.alpha(21), prediction);
      // the output is a noise (or v) estimate at the start level; re-express it at the new level for v
      const eps = prediction === "epsilon" ? modelOutput : modelOutput.map((v, i) => Math.sqrt(s.alpha(1)) * v + Math.sqrt(1 - s.alpha(1)) * sample[i]);
      const x0 = sample.map((x, i) => (x - Math.sqrt(1 - s.alpha(1)) * eps[i]) / Math.sqrt(s.alpha(1)));
      const back = prediction === "epsilon" ? eps : eps.map((e, i) => Math.sqrt(s.alpha(21)) * e - Math.sqrt(1 - s.alpha(21)) * x0[i]);
      const down = ddimStep(Float32Array.from(back), up, s.alpha(21), s.alpha(1), prediction);
      assert.ok(relativeError(down, sample) < 1e-5);
    });
  }
});
