/**
 * Bad input of every kind gets one clear line and loses nothing: images, prompts, model folders,
 * artifacts (with 10,000 fuzzed inputs for the artifact and manifest parsers), cancellation at random
 * steps, and output failures (read-only folder, disk full: simulated by failing the file system calls).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, promises as fsp, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import { ArtifactError, decodeArtifact, encodeArtifact } from "../../src/core/artifact";
import { EngineClient } from "../../src/core/engineClient";
import { Engine, PromptError } from "../../src/core/engine";
import { ImageError, loadImage, savePng } from "../../src/core/image";
import { ManifestError, relativePathProblem, validateManifest } from "../../src/core/manifest";
import { Model, ModelError } from "../../src/core/model";
import { OutputError, saveInversion } from "../../src/core/output";
import { SafetensorsError } from "../../src/core/safetensors";
import { TINY_MODEL, tinyFixtures } from "./helpers/fixtures";

const dir = mkdtempSync(path.join(tmpdir(), "nti-reliability-"));
const oneLine = (e: unknown) => e instanceof Error && e.message.length > 0 && !e.message.includes("\n");

/** A small seeded PRNG (mulberry32), so fuzz and random cancellation points are reproducible. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("images", () => {
  const f = (name: string) => path.join(dir, name);
  before(async () => {
    const base = sharp({ create: { width: 80, height: 60, channels: 3, background: { r: 200, g: 30, b: 30 } } });
    await base.clone().png().toFile(f("ok.png"));
    await base.clone().jpeg().toFile(f("ok.jpg"));
    const png = readFileSync(f("ok.png"));
    const jpg = readFileSync(f("ok.jpg"));
    writeFileSync(f("empty.png"), "");
    writeFileSync(f("truncated.png"), png.subarray(0, png.length >> 1));
    writeFileSync(f("truncated.jpg"), jpg.subarray(0, jpg.length >> 1));
    writeFileSync(f("text.png"), "not an image at all\n");
    const huge = Buffer.from(png);
    huge.writeUInt32BE(30000, 16); // IHDR width
    huge.writeUInt32BE(30000, 20); // IHDR height
    writeFileSync(f("huge.png"), huge);
    await sharp({ create: { width: 1, height: 1, channels: 3, background: "#0000ff" } })
      .png()
      .toFile(f("one.png"));
    await base.clone().toColourspace("rgb16").png().toFile(f("16bit.png"));
    await base.clone().toColourspace("b-w").png().toFile(f("gray.png"));
    await base.clone().toColourspace("cmyk").jpeg().toFile(f("cmyk.jpg"));
    await sharp({ create: { width: 40, height: 40, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
      .png()
      .toFile(f("alpha.png"));
    await base.clone().withMetadata({ orientation: 6 }).jpeg().toFile(f("rotated.jpg"));
    const frame = (c: string) =>
      sharp({ create: { width: 32, height: 32, channels: 3, background: c } })
        .png()
        .toBuffer();
    const frames = [await frame("#404040"), await frame("#c0c0c0")];
    await sharp(frames, { join: { animated: true } })
      .gif()
      .toFile(f("animated.gif"));
    await sharp(frames, { join: { animated: true } })
      .webp()
      .toFile(f("animated.webp"));
    await base.clone().png().toFile(f("a päth with spaces – ü.png"));
  });

  const cases: [string, RegExp | { note?: RegExp; pixel?: number[] }][] = [
    ["empty.png", /the file is empty/],
    ["truncated.png", /damaged or truncated/],
    ["truncated.jpg", /damaged or truncated/],
    ["text.png", /not an image: the image must be PNG, JPEG, WebP/],
    ["huge.png", /larger than the 100 megapixels accepted/],
    ["missing.png", /cannot read it \(ENOENT\)/],
    ["one.png", { note: /1x1 resized to 64x64/, pixel: [0, 0, 255] }],
    ["16bit.png", { note: /samples reduced to 8 bits/, pixel: [200, 30, 30] }],
    ["gray.png", { pixel: [102, 102, 102] }], // the luminance of (200, 30, 30)
    ["cmyk.jpg", { note: /CMYK converted to sRGB/ }],
    ["alpha.png", { note: /transparency flattened onto white/, pixel: [255, 255, 255] }],
    ["rotated.jpg", { note: /EXIF orientation 6 applied/ }],
    ["animated.gif", { note: /2 frames: the first one is used/, pixel: [64, 64, 64] }],
    ["animated.webp", { note: /2 frames: the first one is used/, pixel: [64, 64, 64] }],
    ["a päth with spaces – ü.png", { pixel: [200, 30, 30] }],
  ];
  for (const [name, expect] of cases) {
    test(name, async () => {
      if (expect instanceof RegExp) {
        await assert.rejects(
          loadImage(f(name), 64),
          (e: Error) => e instanceof ImageError && oneLine(e) && e.message.startsWith(f(name)) && expect.test(e.message),
        );
        return;
      }
      const img = await loadImage(f(name), 64);
      assert.equal(img.rgb.length, 64 * 64 * 3);
      if (expect.note) assert.match(img.notes.join(" | "), expect.note);
      if (expect.pixel) {
        const px = Array.from(img.rgb.subarray(32 * 64 * 3 + 96, 32 * 64 * 3 + 99));
        assert.ok(
          px.every((v, i) => Math.abs(v - expect.pixel![i]) <= 3),
          `centre pixel ${px}`,
        );
      }
    });
  }
});

describe("prompts and model folders", () => {
  let engine: Engine;
  before(async () => {
    engine = await Engine.open(TINY_MODEL);
  });
  after(() => engine.close());

  test("empty, too long, emoji and unknown words", () => {
    assert.throws(
      () => engine.checkPrompt("   "),
      (e: Error) => e instanceof PromptError && /the prompt is empty/.test(e.message),
    );
    const long = Array.from({ length: 90 }, () => "red").join(" ");
    assert.deepEqual(engine.checkPrompt(long), ["the prompt is longer than 77 tokens: only its first 75 tokens are used"]);
    assert.throws(() => engine.checkPrompt("a red circle 🎈"), /does not know the word "🎈"/);
    // the error names the words the model does know, so the next try can use them
    assert.throws(() => engine.checkPrompt("a crimson circle"), /does not know the word "crimson" \(its vocabulary is word-level; it knows: a, .*circle.*\)$/);
  });

  test("a graph whose shape differs from nti.json is named when its session opens", async () => {
    const d = path.join(dir, "model-shape");
    cpSync(TINY_MODEL, d, { recursive: true });
    const manifest = JSON.parse(readFileSync(path.join(d, "nti.json"), "utf8"));
    manifest.graphs.unet.inputs[0].shape = ["batch", 4, 32, 32];
    writeFileSync(path.join(d, "nti.json"), JSON.stringify(manifest));
    const model = await Model.open(d);
    await assert.rejects(
      model.graph("unet"),
      (e: Error) =>
        e instanceof ModelError && oneLine(e) && /input "sample" has shape \[batch, 4, 16, 16\], nti.json says \[batch, 4, 32, 32\]/.test(e.message),
    );
    await model.release();
  });
});

describe("fuzzing the parsers", () => {
  let valid: Uint8Array;
  before(async () => {
    const engine = await Engine.open(TINY_MODEL);
    const image = path.join(dir, "fuzz-source.png");
    await savePng(image, tinyFixtures().tensors.image.data as Uint8Array, 64);
    const result = await engine.invert({ imagePath: image, prompt: "a red circle", settings: { steps: 3, innerSteps: 2 } });
    valid = encodeArtifact(result.artifact);
    await engine.close();
  });

  test("10,000 mutated artifacts: each read or rejected with one clear line, none slow; non-finite values always rejected", () => {
    const rand = prng(1);
    const headerLength = Number(new DataView(valid.buffer, valid.byteOffset, 8).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(valid.subarray(8, 8 + headerLength)));
    const floatTensors = ["z_T", "null_embeddings"].map((name) => header[name].data_offsets as [number, number]);
    const counts = { accepted: 0, rejected: 0, nonFiniteInjected: 0, nonFiniteRejected: 0 };
    let slowest = 0;
    for (let i = 0; i < 10_000; i++) {
      let bytes: Uint8Array = Uint8Array.from(valid);
      const kind = i % 7;
      if (kind === 0) bytes = bytes.subarray(0, Math.floor(rand() * bytes.length));
      else if (kind === 1) for (let k = 0; k < 1 + rand() * 4; k++) bytes[8 + Math.floor(rand() * headerLength)] ^= 1 << Math.floor(rand() * 8);
      else if (kind === 2) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      else if (kind === 3) new DataView(bytes.buffer).setBigUint64(0, BigInt(Math.floor(rand() * 2 ** 52)), true);
      else if (kind === 4) bytes = Uint8Array.from({ length: Math.floor(rand() * 512) }, () => Math.floor(rand() * 256));
      else if (kind === 5) bytes = mutateHeader(bytes, headerLength, rand);
      else {
        // one NaN or infinity somewhere in z_T or the null embeddings
        const [begin, end] = floatTensors[Math.floor(rand() * floatTensors.length)];
        const index = Math.floor(rand() * ((end - begin) / 4));
        new DataView(bytes.buffer).setFloat32(8 + headerLength + begin + 4 * index, [NaN, Infinity, -Infinity][Math.floor(rand() * 3)], true);
        counts.nonFiniteInjected += 1;
      }
      const started = performance.now();
      try {
        decodeArtifact(bytes);
        counts.accepted += 1;
      } catch (error) {
        assert.ok(
          (error instanceof ArtifactError || error instanceof SafetensorsError) && oneLine(error),
          `mutation ${i} (${kind}) crashed the reader: ${error}`,
        );
        counts.rejected += 1;
        if (kind === 6 && /holds (NaN|-?Infinity) at index/.test((error as Error).message)) counts.nonFiniteRejected += 1;
      }
      slowest = Math.max(slowest, performance.now() - started);
    }
    process.stdout.write(`# artifact fuzzing: ${JSON.stringify(counts)}, slowest ${slowest.toFixed(1)} ms\n`);
    assert.ok(counts.rejected > 5000, JSON.stringify(counts));
    assert.equal(counts.nonFiniteRejected, counts.nonFiniteInjected, "every injected NaN/infinity is refused, naming its tensor");
    assert.ok(slowest < 1000, `slowest ${slowest} ms`);
  });

  test("10,000 mutated manifests (values, paths, numeric parameters): each valid or rejected with one clear line; none accepted unsafe", () => {
    const rand = prng(2);
    const original = JSON.parse(readFileSync(path.join(TINY_MODEL, "nti.json"), "utf8"));
    const values = [null, 0, -1, 1.5, "", "x", [], {}, true, 1e308, "a".repeat(100), [1, 2], { name: 1 }];
    const hostilePaths = ["../nti.json", "/etc/passwd", "C:/Windows/x", "a\\b.onnx", "unet/../../x", "./unet/model.onnx", "unet//model.onnx", "x\u0000y"];
    const numbers = [0, -1, -1e-9, 1e-12, 0.5, 5e7, 1e30, 2 ** 53, -0];
    const counts = { valid: 0, rejected: 0, pathMutations: 0, numberMutations: 0 };
    for (let i = 0; i < 10_000; i++) {
      const m = structuredClone(original);
      const paths = collectPaths(m);
      for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) {
        const p = paths[Math.floor(rand() * paths.length)];
        const parent = p.slice(0, -1).reduce((o: any, key) => (o == null ? o : o[key]), m);
        if (parent == null || typeof parent !== "object") continue;
        const key = p[p.length - 1];
        const current = parent[key];
        const mode = rand();
        if (typeof current === "string" && /\.(onnx|json|data)$|\//.test(current) && mode < 0.6) {
          parent[key] = hostilePaths[Math.floor(rand() * hostilePaths.length)];
          counts.pathMutations += 1;
        } else if (typeof current === "number" && mode < 0.6) {
          parent[key] = numbers[Math.floor(rand() * numbers.length)];
          counts.numberMutations += 1;
        } else if (key === "files" || (p.length === 2 && p[0] === "files" && mode < 0.3)) {
          const files = p.length === 2 ? parent : current;
          const name = Object.keys(files)[0];
          files[hostilePaths[Math.floor(rand() * hostilePaths.length)]] = files[name];
          if (rand() < 0.5) delete files[name];
          counts.pathMutations += 1;
        } else if (rand() < 0.3) delete parent[key];
        else parent[key] = values[Math.floor(rand() * values.length)];
      }
      if (i % 5 === 1) {
        // one in five: a path the engine opens points somewhere else
        const graphs = m.graphs && typeof m.graphs === "object" ? (Object.values(m.graphs) as any[]) : [];
        const target = rand() < 0.3 ? m.tokenizer : graphs[Math.floor(rand() * graphs.length)];
        if (target && typeof target === "object") {
          target[rand() < 0.8 ? "file" : "external_data"] = hostilePaths[Math.floor(rand() * hostilePaths.length)];
          counts.pathMutations += 1;
        }
      }
      const subject = i % 10 === 0 ? values[i % values.length] : m;
      let accepted;
      try {
        accepted = validateManifest(subject);
      } catch (error) {
        assert.ok(error instanceof ManifestError && oneLine(error), `manifest mutation ${i} crashed the validator: ${error}`);
        counts.rejected += 1;
        continue;
      }
      counts.valid += 1;
      // what is accepted is safe: every file it names is a plain relative path listed with its hash
      const named = [
        accepted.tokenizer.file,
        ...Object.values(accepted.graphs).flatMap((g) => [
          g!.file,
          ...(g!.external_data ? [path.posix.join(path.posix.dirname(g!.file), g!.external_data)] : []),
        ]),
      ];
      for (const file of [...named, ...Object.keys(accepted.files)]) assert.equal(relativePathProblem(file), null, `mutation ${i} accepted the path ${file}`);
      for (const file of named) assert.ok(file in accepted.files, `mutation ${i} accepted the unlisted ${file}`);
      assert.ok(
        accepted.scheduler.beta_start > 0 && accepted.vae_scaling_factor > 0 && accepted.attention.map_resolution >= 1 && accepted.tokenizer.max_length <= 1024,
        `mutation ${i} accepted a parameter out of range`,
      );
    }
    process.stdout.write(`# manifest fuzzing: ${JSON.stringify(counts)}\n`);
    // many mutations stay valid (a different string where any string will do); none may crash
    assert.ok(counts.rejected > 5000, JSON.stringify(counts));
  });
});

/** Changes one value of the JSON header (keeping it JSON) and rewrites the file around it. */
function mutateHeader(bytes: Uint8Array, headerLength: number, rand: () => number): Uint8Array {
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const inner = JSON.parse(header.__metadata__.nti);
  const target = rand() < 0.5 ? inner : header;
  const paths = collectPaths(target);
  const p = paths[Math.floor(rand() * paths.length)];
  const parent = p.slice(0, -1).reduce((o: any, key) => o[key], target);
  const choices = [null, -1, 0, 3.5, "x", [], {}, true, 2 ** 40, [0, 2 ** 40]];
  parent[p[p.length - 1]] = choices[Math.floor(rand() * choices.length)];
  if (target === inner) header.__metadata__.nti = JSON.stringify(inner);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + bytes.length - 8 - headerLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + headerLength), 8 + json.length);
  return out;
}

function collectPaths(value: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      const p = [...prefix, Array.isArray(value) ? Number(k) : k];
      out.push(p);
      if (out.length < 2000) collectPaths(v, p, out);
    }
  }
  return out;
}

describe("cancellation at random steps", () => {
  const client = new EngineClient(path.join(__dirname, "helpers/worker-entry.cjs"));
  after(() => client.dispose());

  test("inversions and edits cancelled anywhere leave no files; the next run succeeds", async () => {
    const rand = prng(3);
    const image = path.join(dir, "cancel-source.png");
    await savePng(image, tinyFixtures().tensors.image.data as Uint8Array, 64);
    const job = { modelDir: TINY_MODEL, imagePath: image, prompt: "a red circle on a white background", settings: { steps: 10, innerSteps: 3 } };
    const done = await client.invert({ ...job, outDir: path.join(dir, "cancel-base") });
    const phases = ["invert", "optimize", "compare"];
    for (let k = 0; k < 6; k++) {
      const out = path.join(dir, `cancel-${k}`);
      const phase = phases[Math.floor(rand() * phases.length)];
      const step = 1 + Math.floor(rand() * 9);
      const controller = new AbortController();
      await assert.rejects(
        client.invert({ ...job, outDir: out }, { signal: controller.signal, onProgress: (p) => p.phase === phase && p.step === step && controller.abort() }),
        { name: "AbortError" },
        `invert cancelled in ${phase} at step ${step}`,
      );
      assert.ok(!existsSync(out) || readdirSync(out).length === 0, `files left after cancelling in ${phase} ${step}`);
      const editOut = path.join(dir, `cancel-edit-${k}`);
      const editStep = 1 + Math.floor(rand() * 9);
      const editController = new AbortController();
      await assert.rejects(
        client.edit(
          { modelDir: TINY_MODEL, artifactPath: done.artifact, outDir: editOut, prompts: ["a blue circle on a white background"] },
          { signal: editController.signal, onProgress: (p) => p.step === editStep && editController.abort() },
        ),
        { name: "AbortError" },
      );
      assert.ok(!existsSync(editOut) || readdirSync(editOut).length === 0, "files left after cancelling an edit");
    }
    assert.equal(client.busy, false, "the worker is free");
    const again = await client.invert({ ...job, outDir: path.join(dir, "cancel-after") });
    assert.ok(existsSync(again.artifact));
  });
});

describe("output failures", () => {
  let result: Awaited<ReturnType<Engine["invert"]>>;
  let image: string;
  before(async () => {
    image = path.join(dir, "out-source.png");
    await savePng(image, tinyFixtures().tensors.image.data as Uint8Array, 64);
    const engine = await Engine.open(TINY_MODEL);
    result = await engine.invert({ imagePath: image, prompt: "a red circle", settings: { steps: 3, innerSteps: 2 } });
    await engine.close();
  });
  const sha = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");

  /** Runs `work` with fsp.open failing as `fail` says (a read-only or full disk, which root cannot get from chmod). */
  async function withFailingOpen(fail: (call: number) => NodeJS.ErrnoException | null, work: () => Promise<void>) {
    const original = fsp.open;
    let calls = 0;
    (fsp as { open: typeof fsp.open }).open = (async (...args: Parameters<typeof fsp.open>) => {
      const error = fail(++calls);
      if (error) throw error;
      return original(...args);
    }) as typeof fsp.open;
    try {
      await work();
    } finally {
      (fsp as { open: typeof fsp.open }).open = original;
    }
  }
  const errno = (code: string, file = "x") => Object.assign(new Error(`${code}: simulated`), { code, path: file });

  test("a read-only output folder: clear error, nothing written, source untouched", async () => {
    const out = path.join(dir, "read-only");
    const before = sha(image);
    await withFailingOpen(
      () => errno("EROFS"),
      async () => {
        await assert.rejects(
          saveInversion(out, image, result),
          (e: Error) => e instanceof OutputError && oneLine(e) && /EROFS; nothing was saved/.test(e.message),
        );
      },
    );
    assert.deepEqual(readdirSync(out), []);
    assert.equal(sha(image), before);
  });

  test("the disk fills up during the third file: earlier files removed, no temp files", async () => {
    const out = path.join(dir, "full");
    await withFailingOpen(
      (call) => (call >= 3 ? errno("ENOSPC") : null),
      async () => {
        await assert.rejects(
          saveInversion(out, image, result),
          (e: Error) => e instanceof OutputError && /the disk is full; nothing was saved/.test(e.message),
        );
      },
    );
    assert.deepEqual(readdirSync(out), []);
  });

  test("an output path that is a file, and results never overwrite the source", async () => {
    const file = path.join(dir, "not-a-folder");
    writeFileSync(file, "x");
    await assert.rejects(saveInversion(file, image, result), (e: Error) => e instanceof OutputError && /cannot be created \(EEXIST\)/.test(e.message));
    // saving into the source's own folder picks names beside it, never the source itself
    const sourceDir = path.join(dir, "beside");
    mkdirSync(sourceDir);
    const source = path.join(sourceDir, "out-source.source.png");
    writeFileSync(source, "precious");
    const saved = await saveInversion(sourceDir, source.replace(".source.png", ".png"), result);
    assert.equal(readFileSync(source, "utf8"), "precious");
    assert.notEqual(saved.source, source);
  });
});
