/**
 * The engine's public API end to end on the tiny random model: invert by each method, save, read the
 * artifact back, reconstruct from it; cancellation; broken model folders and prompts.
 */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { decodeArtifact, encodeArtifact, readArtifact, checkArtifactMatchesModel, ArtifactError } from "../../src/core/artifact";
import { Engine, PromptError, SettingsError } from "../../src/core/engine";
import { savePng } from "../../src/core/image";
import { Model, ModelError } from "../../src/core/model";
import { saveInversion } from "../../src/core/output";
import { SHAPES_MODEL, TINY_MODEL, tinyFixtures } from "./helpers/fixtures";

const dir = mkdtempSync(path.join(tmpdir(), "nti-engine-"));
const imagePath = path.join(dir, "source image.png");
const fx = tinyFixtures();
const quick = { steps: 10, innerSteps: 3 };
let engine: Engine;

before(async () => {
  await savePng(imagePath, fx.tensors.image.data as Uint8Array, 64);
  engine = await Engine.open(TINY_MODEL);
});
after(async () => engine.close());

describe("invert", () => {
  test("null-text: a loss record per step, UNet counts, a reconstruction at least as good as DDIM's", async () => {
    const phases = new Set<string>();
    const result = await engine.invert({ imagePath, prompt: fx.meta.prompt, settings: quick }, { onProgress: (p) => phases.add(p.phase) });
    const h = result.artifact.header;
    assert.equal(h.steps.length, 10);
    for (const r of h.steps) assert.ok(r.losses.length >= 1 && r.losses.length <= 3);
    const inner = h.steps.reduce((a, r) => a + r.losses.length, 0);
    // inversion 10 + per step (cond 1 + final uncond 1) + one gradient call per inner iteration, then the
    // DDIM-only comparison (batch 2); the reconstruction is the optimisation's own last latent
    assert.equal(h.stats.unetForward, 10 + 20 + inner + 20);
    assert.equal(h.stats.unetBackward, inner);
    assert.ok(result.ddimPsnr !== null && result.psnr >= result.ddimPsnr - 0.5, `null-text ${result.psnr} vs DDIM ${result.ddimPsnr}`);
    assert.deepEqual([...phases].sort(), ["compare", "decode", "encode", "invert", "optimize"]);
  });

  for (const schedule of ["paper", "fast"] as const) {
    test(`null-text, ${schedule} schedule: sampling again from the artifact retraces the optimisation's reconstruction`, async () => {
      const result = await engine.invert({ imagePath, prompt: fx.meta.prompt, schedule, settings: { steps: 10 }, compareWithDdim: false });
      const again = await engine.reconstruct(decodeArtifact(encodeArtifact(result.artifact)));
      let worst = 0;
      for (let i = 0; i < again.image.length; i++) worst = Math.max(worst, Math.abs(again.image[i] - result.reconstruction[i]));
      // batch-1 and batch-2 UNet calls differ by float rounding, so a pixel may round the other way
      assert.ok(worst <= 1, `largest pixel difference ${worst}`);
    });
  }

  test("schedules: named values, explicit settings over them, unknown names refused", () => {
    const fast = engine.resolveSettings({}, "fast");
    assert.deepEqual(
      { innerLoop: fast.innerLoop, nullInit: fast.nullInit, innerSteps: fast.innerSteps, earlyStop: fast.earlyStop, earlyStopSlope: fast.earlyStopSlope },
      { innerLoop: "lean", nullInit: "prompt", innerSteps: 3, earlyStop: 5e-6, earlyStopSlope: 1e-5 },
    );
    const paper = engine.resolveSettings({});
    assert.equal(paper.innerLoop, "notebook");
    assert.equal(paper.nullInit, "empty");
    assert.equal(paper.innerSteps, engine.model.manifest.defaults.inner_steps);
    assert.equal(engine.resolveSettings({ innerSteps: 7, innerLoop: undefined }, "fast").innerSteps, 7);
    assert.throws(() => engine.resolveSettings({}, "quick" as never), /schedule must be one of paper, fast/);
    assert.throws(() => engine.resolveSettings({ innerLoop: "eager" as never }), /inner loop must be one of notebook, lean/);
    assert.throws(() => engine.resolveSettings({ nullInit: "zeros" as never }), /null init must be one of empty, prompt/);
  });

  test("fast schedule: no pass beyond the cond noise and the gradient calls", async () => {
    const result = await engine.invert({ imagePath, prompt: fx.meta.prompt, schedule: "fast", settings: { steps: 10 }, compareWithDdim: false });
    const h = result.artifact.header;
    const inner = h.steps.reduce((a, r) => a + r.losses.length, 0);
    for (const r of h.steps) assert.ok(r.losses.length >= 1 && r.losses.length <= 3);
    assert.equal(h.stats.unetForward, 10 + 10 + inner);
    assert.equal(h.stats.unetBackward, inner);
    assert.equal(h.settings.innerLoop, "lean");
  });

  for (const method of ["npi", "direct", "ddim"] as const) {
    test(`${method}: no optimisation, no backward passes, artifact reconstructs the same image`, async () => {
      const result = await engine.invert({ imagePath, prompt: fx.meta.prompt, settings: { ...quick, method } });
      assert.equal(result.artifact.header.stats.unetBackward, 0);
      assert.equal(result.artifact.header.steps.length, 0);
      const again = await engine.reconstruct(decodeArtifact(encodeArtifact(result.artifact)));
      assert.deepEqual(again.image, result.reconstruction);
    });
  }

  test("settings and prompts are checked with a clear error", async () => {
    await assert.rejects(engine.invert({ imagePath, prompt: "", settings: quick }), PromptError);
    await assert.rejects(engine.invert({ imagePath, prompt: "a red zebra", settings: quick }), /does not know the word "zebra"/);
    await assert.rejects(engine.invert({ imagePath, prompt: "a red circle", settings: { steps: 0 } }), SettingsError);
    await assert.rejects(engine.invert({ imagePath, prompt: "a red circle", settings: { method: "magic" as never } }), /method "magic"/);
  });

  test("an AbortSignal stops it between graph calls", async () => {
    const controller = new AbortController();
    const run = engine.invert(
      { imagePath, prompt: fx.meta.prompt, settings: quick },
      { signal: controller.signal, onProgress: (p) => p.phase === "optimize" && p.step === 3 && controller.abort() },
    );
    await assert.rejects(run, { name: "AbortError" });
    // and the engine is fine afterwards
    const ok = await engine.invert({ imagePath, prompt: fx.meta.prompt, settings: { ...quick, method: "ddim" } });
    assert.equal(ok.artifact.header.settings.method, "ddim");
  });
});

describe("sessions", () => {
  test("the graphs a job runs once are released after it, the UNet's are kept; run statistics survive", async () => {
    const local = await Engine.open(TINY_MODEL, { releasePerCallGraphs: true });
    const model = local.model;
    try {
      await local.prepare("nulltext");
      assert.deepEqual(model.residentGraphs().sort(), ["null_text_grad", "text_encoder", "unet", "vae_decoder", "vae_encoder"]);
      await local.invert({ imagePath, prompt: fx.meta.prompt, settings: { ...quick, steps: 3 } });
      assert.deepEqual(model.residentGraphs().sort(), ["null_text_grad", "unet"]);
      const stats = model.runStats();
      assert.equal(stats.text_encoder?.calls, 1);
      assert.equal(stats.vae_encoder?.calls, 1);
      assert.equal(stats.vae_decoder?.calls, 2, "the reconstruction and the DDIM-only one, one image a call");
      // uses that overlap share one session, released when the last one ends
      const ids = { input_ids: { type: "int64" as const, data: new BigInt64Array(77), dims: [1, 77] } };
      const once = () => model.withGraph("text_encoder", (encoder) => encoder.run(ids));
      const outs = await Promise.all([once(), once()]);
      assert.deepEqual(outs[0].last_hidden_state, outs[1].last_hidden_state);
      assert.equal(model.runStats().text_encoder?.calls, 3);
      assert.ok(!model.residentGraphs().includes("text_encoder"));
    } finally {
      await local.close();
    }
  });

  test("a small model keeps them by default: creating them again would cost more than they hold", async () => {
    const local = await Engine.open(TINY_MODEL);
    try {
      await local.invert({ imagePath, prompt: fx.meta.prompt, settings: { ...quick, steps: 3 } });
      assert.deepEqual(local.model.residentGraphs().sort(), ["null_text_grad", "text_encoder", "unet", "vae_decoder", "vae_encoder"]);
    } finally {
      await local.close();
    }
  });
});

describe("artifacts and saved results", () => {
  test("save: every file written once, no temp files, never over an earlier result; read back equal", async () => {
    const out = path.join(dir, "out");
    const result = await engine.invert({ imagePath, prompt: fx.meta.prompt, settings: quick });
    const first = await saveInversion(out, imagePath, result);
    const second = await saveInversion(out, imagePath, result);
    assert.equal(path.basename(first.artifact), "source image.nti");
    assert.equal(path.basename(second.artifact), "source image-2.nti");
    assert.ok(readdirSync(out).every((f) => !f.endsWith(".tmp")));
    const back = await readArtifact(first.artifact);
    assert.deepEqual(back.header, result.artifact.header);
    assert.deepEqual(back.nullEmbeddings, result.artifact.nullEmbeddings);
    assert.deepEqual(back.zT, result.artifact.zT);
    const rec = await engine.reconstruct(back);
    assert.deepEqual(rec.image, result.reconstruction);
  });

  test("a truncated or tampered artifact is refused with a clear error", async () => {
    const result = await engine.invert({ imagePath, prompt: fx.meta.prompt, settings: { ...quick, method: "ddim" } });
    const bytes = encodeArtifact(result.artifact);
    const truncated = path.join(dir, "truncated.nti");
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 100));
    await assert.rejects(readArtifact(truncated), (e: Error) => e instanceof ArtifactError && /outside the .* data bytes: truncated/.test(e.message));
    const tampered = Buffer.from(bytes);
    const at = tampered.indexOf(Buffer.from('\\"method\\":\\"ddim\\"'));
    assert.ok(at > 0);
    tampered.write('\\"method\\":\\"dd1m\\"', at);
    const file = path.join(dir, "tampered.nti");
    writeFileSync(file, tampered);
    await assert.rejects(readArtifact(file), /settings: method "dd1m" is not one of/);
  });

  test("an artifact made with another model is refused, naming both", async () => {
    const result = await engine.invert({ imagePath, prompt: "a red circle", settings: { ...quick, method: "ddim" } });
    const shapes = await Model.open(SHAPES_MODEL);
    try {
      assert.throws(() => checkArtifactMatchesModel(result.artifact, shapes), /made with model "random-tiny".*not with "shapes-tiny".*re-invert/);
    } finally {
      await shapes.release();
    }
  });
});

describe("broken model folders", () => {
  const broken = (name: string, change: (d: string) => void) => {
    const d = path.join(dir, `model-${name}`);
    cpSync(TINY_MODEL, d, { recursive: true });
    change(d);
    return d;
  };
  const manifest = (d: string) => JSON.parse(readFileSync(path.join(d, "nti.json"), "utf8"));
  const writeManifest = (d: string, m: unknown) => writeFileSync(path.join(d, "nti.json"), JSON.stringify(m));

  const cases: [string, (d: string) => void, RegExp][] = [
    ["no-folder", (d) => rmSync(d, { recursive: true }), /does not exist/],
    ["no-manifest", (d) => rmSync(path.join(d, "nti.json")), /nti.json is missing: export the model/],
    ["bad-json", (d) => writeFileSync(path.join(d, "nti.json"), "{"), /nti.json is not valid JSON/],
    ["version", (d) => writeManifest(d, { ...manifest(d), format_version: 9 }), /format_version 9 is not supported/],
    ["missing-unet", (d) => rmSync(path.join(d, "unet/model.onnx")), /unet\/model.onnx is missing/],
    [
      "hash",
      (d) => {
        const f = path.join(d, "vae_decoder/model.onnx");
        const b = readFileSync(f);
        b[b.length - 5] ^= 0xff;
        writeFileSync(f, b);
      },
      /vae_decoder\/model.onnx: sha256 .* does not match nti.json/,
    ],
    [
      "no-graph",
      (d) => {
        const m = manifest(d);
        delete m.graphs.unet;
        writeManifest(d, m);
      },
      /graphs.unet is missing/,
    ],
  ];
  for (const [name, change, pattern] of cases) {
    test(`${name}: one clear line`, async () => {
      await assert.rejects(Model.open(broken(name, change)), (e: Error) => e instanceof ModelError && pattern.test(e.message) && !e.message.includes("\n"));
    });
  }

  test("a graph whose real inputs differ from the manifest is named when its session opens", async () => {
    const d = broken("io", (d) => {
      const m = manifest(d);
      m.graphs.unet.inputs[0].name = "latents";
      m.graphs.unet.inputs.push({ name: "sample", dtype: "float32", shape: ["batch", 4, 16, 16] });
      writeManifest(d, m);
    });
    const model = await Model.open(d, { verifyHashes: false });
    await assert.rejects(model.graph("unet"), /unet\/model.onnx: has no input "latents" \(it has: sample, timestep, encoder_hidden_states\)/);
    await model.release();
  });

  test("a corrupt ONNX file is named: by the size check, by the hash, and by ONNX Runtime when hashes are not checked", async () => {
    const d = broken("corrupt", (d) => writeFileSync(path.join(d, "unet/model.onnx"), "not onnx"));
    await assert.rejects(Model.open(d), /unet\/model.onnx has 8 bytes, nti.json says/);
    const m = manifest(d);
    m.files["unet/model.onnx"].bytes = 8;
    writeManifest(d, m);
    await assert.rejects(Model.open(d), /unet\/model.onnx: sha256 [0-9a-f]{12}… does not match nti.json/);
    const model = await Model.open(d, { verifyHashes: false });
    await assert.rejects(model.graph("unet"), /unet\/model.onnx: ONNX Runtime cannot load it: /);
    await model.release();
  });
});
