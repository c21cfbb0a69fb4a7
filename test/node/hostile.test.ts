/**
 * Reliability, second round: what the first round (reliability.test.ts) did not try. One test per case:
 * parallel runs sharing an output folder, special files (devices, FIFOs, symlinks to them, SVG named .png),
 * artifacts that name a model folder, non-finite numbers, a 40,000-character prompt, model folders whose
 * paths leave the folder, processes killed mid-write, absurd thread counts, and header values out of range.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { before, describe, test } from "node:test";
import { ArtifactError, decodeArtifact, encodeArtifact, InversionArtifact, readArtifact } from "../../src/core/artifact";
import { GraphSession, NonFiniteError, f32, timestepFeed } from "../../src/core/backend";
import { Engine } from "../../src/core/engine";
import { EngineClient } from "../../src/core/engineClient";
import { HOST_ID, removeStale, reserveStem, writeTemp } from "../../src/core/files";
import { ImageError, loadImage, loadMask, savePng } from "../../src/core/image";
import { ManifestError, validateManifest } from "../../src/core/manifest";
import { Model, ModelError } from "../../src/core/model";
import { saveInversion } from "../../src/core/output";
import { ROOT, SHAPES_MODEL, TINY_MODEL, tinyFixtures } from "./helpers/fixtures";

const dir = mkdtempSync(path.join(tmpdir(), "nti-hostile-"));
const f = (name: string) => path.join(dir, name);
const oneLine = (e: unknown) => e instanceof Error && e.message.length > 0 && !e.message.includes("\n");
// by URL, so a child can run from any folder
const TSX = ["--import", pathToFileURL(path.join(ROOT, "node_modules/tsx/dist/loader.mjs")).href];
const CLI = path.join(ROOT, "src/cli/nti.ts");

function nti(args: string[], cwd = ROOT) {
  const r = spawnSync(process.execPath, [...TSX, CLI, ...args], { cwd, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `node --import tsx -e script` with args, resolving with its exit code and output. */
function nodeScript(script: string, args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...TSX, "-e", script, "--", ...args], { cwd: ROOT });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

let sourceImage: string;
let tinyArtifact: InversionArtifact;
let tinyArtifactFile: string;

before(async () => {
  sourceImage = f("source.png");
  await savePng(sourceImage, tinyFixtures().tensors.image.data as Uint8Array, 64);
  const engine = await Engine.open(TINY_MODEL);
  tinyArtifact = (await engine.invert({ imagePath: sourceImage, prompt: "a red circle", settings: { steps: 3, innerSteps: 2 } })).artifact;
  await engine.close();
  tinyArtifactFile = f("tiny.nti");
  writeFileSync(tinyArtifactFile, encodeArtifact(tinyArtifact));
});

describe("1. parallel runs into one output folder", () => {
  // Each child saves, 20 times, a result of its own (its id in the prompt and in the source's first pixel)
  // for an image named photo.png into trial-<t>/; all children start together.
  const child = `
    const { decodeArtifact } = require("./src/core/artifact");
    const { saveInversion } = require("./src/core/output");
    const { readFileSync } = require("node:fs");
    const [file, base, id, trials] = process.argv.slice(-4);
    const a = decodeArtifact(new Uint8Array(readFileSync(file)));
    a.header.prompt = "run " + id;
    a.source = Uint8Array.from(a.source); a.source[0] = Number(id);
    const result = { artifact: a, reconstruction: a.source, ddimReconstruction: a.source, psnr: 30, ddimPsnr: 20, notes: [] };
    (async () => {
      const out = [];
      for (let t = 0; t < Number(trials); t++) out.push(await saveInversion(base + "/trial-" + t, "/elsewhere/" + id + "/photo.png", result));
      process.stdout.write(JSON.stringify(out));
    })();`;

  test("8 processes x 20 trials: 8 complete sets per trial under distinct stems, never mixed", async () => {
    const base = f("parallel");
    const runs = await Promise.all(Array.from({ length: 8 }, (_, id) => nodeScript(child, [tinyArtifactFile, base, String(id), "20"])));
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    const reported = runs.map((r) => JSON.parse(r.stdout) as { artifact: string; source: string; reconstruction: string; ddimReconstruction: string }[]);
    const sharp = (await import("sharp")).default;
    for (let t = 0; t < 20; t++) {
      const folder = path.join(base, `trial-${t}`);
      const files = readdirSync(folder);
      assert.equal(files.filter((n) => n.endsWith(".nti")).length, 8, `trial ${t}: ${files.join(" ")}`);
      assert.equal(files.length, 8 * 4, `trial ${t}: no leftovers (${files.join(" ")})`);
      const stems = new Set(reported.map((r) => r[t].artifact));
      assert.equal(stems.size, 8, `trial ${t}: every run reported its own stem`);
      for (const [id, r] of reported.entries()) {
        const a = decodeArtifact(new Uint8Array(readFileSync(r[t].artifact)));
        assert.equal(a.header.prompt, `run ${id}`, `trial ${t}: ${r[t].artifact} holds run ${id}'s artifact`);
        const { data } = await sharp(r[t].source).raw().toBuffer({ resolveWithObject: true });
        assert.equal(data[0], id, `trial ${t}: ${r[t].source} is run ${id}'s source`);
      }
    }
  });

  test("8 parallel `nti invert` runs of two different photo.png into one --out: 8 complete sets", async () => {
    const out = f("parallel-cli");
    for (const k of ["a", "b"]) {
      mkdirSync(f(k));
      cpSync(k === "a" ? sourceImage : path.join(ROOT, "media/samples/two-shapes.png"), path.join(f(k), "photo.png"));
    }
    const runs = await Promise.all(
      Array.from(
        { length: 8 },
        (_, i) =>
          new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
            const image = path.join(f(i % 2 ? "b" : "a"), "photo.png");
            const c = spawn(
              process.execPath,
              [...TSX, CLI, "invert", image, "--prompt", "a red circle", "--model", TINY_MODEL, "--method", "ddim", "--steps", "2", "--out", out, "--json"],
              { cwd: ROOT },
            );
            let stdout = "";
            let stderr = "";
            c.stdout.on("data", (d) => (stdout += d));
            c.stderr.on("data", (d) => (stderr += d));
            c.on("exit", (code) => resolve({ code, stdout, stderr }));
          }),
      ),
    );
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    const artifacts = runs.map((r) => JSON.parse(r.stdout).artifact as string);
    assert.equal(new Set(artifacts).size, 8, artifacts.join(" "));
    const files = readdirSync(out);
    assert.equal(files.length, 8 * 3, files.join(" ")); // DDIM inversions have no separate DDIM-only image
    for (const [i, a] of artifacts.entries()) {
      const stem = a.replace(/\.nti$/, "");
      for (const suffix of [".source.png", ".reconstruction.png"]) assert.ok(existsSync(stem + suffix), stem + suffix);
      assert.equal(decodeArtifact(new Uint8Array(readFileSync(a))).header.source.path, path.join(f(i % 2 ? "b" : "a"), "photo.png"), `${a} is run ${i}'s`);
    }
  });
});

describe("2, 3, 7. only regular raster files are read", () => {
  before(() => {
    symlinkSync("/dev/zero", f("zero.png"));
    symlinkSync("/dev/urandom", f("random.nti"));
    spawnSync("mkfifo", [f("fifo.png")]);
    // an 8000x8000 canvas with blur filters: seconds of rendering per megapixel if it were decoded
    const blur = Array.from(
      { length: 40 },
      (_, i) =>
        `<filter id="b${i}"><feGaussianBlur stdDeviation="${50 + i}"/></filter><rect width="8000" height="8000" filter="url(#b${i})" fill="#${(i * 5).toString(16).padStart(2, "0")}3366"/>`,
    ).join("");
    writeFileSync(f("drawing.png"), `<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="8000" height="8000">${blur}</svg>`);
    writeFileSync(f("document.png"), "%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n");
  });

  const refused: [string, string, RegExp][] = [
    ["/dev/zero as an image", "/dev/zero", /the image is a character device, not a regular file/],
    ["/dev/urandom as an image", "/dev/urandom", /the image is a character device, not a regular file/],
    ["a .png symlink to /dev/zero", "zero.png", /the image is a character device, not a regular file/],
    ["a FIFO", "fifo.png", /the image is a named pipe \(FIFO\), not a regular file/],
    ["a folder", ".", /the image is a folder, not a regular file/],
    ["an SVG named .png", "drawing.png", /an SVG drawing, not a raster image/],
    ["a PDF named .png", "document.png", /a PDF document, not a raster image/],
  ];
  for (const [name, file, expected] of refused) {
    test(`image: ${name} is refused at once`, async () => {
      const full = path.isAbsolute(file) ? file : f(file);
      const started = performance.now();
      await assert.rejects(loadImage(full, 64), (e: Error) => e instanceof ImageError && oneLine(e) && e.message.startsWith(full) && expected.test(e.message));
      assert.ok(performance.now() - started < 2000, "refused before reading");
    });
  }

  test("mask and artifact: the same rules", async () => {
    await assert.rejects(loadMask(f("fifo.png"), 8), /the mask is a named pipe \(FIFO\), not a regular file/);
    await assert.rejects(loadMask(f("zero.png"), 8), /the mask is a character device/);
    await assert.rejects(loadMask(f("drawing.png"), 8), /an SVG drawing, not a raster image: the mask must be PNG/);
    await assert.rejects(
      readArtifact(f("random.nti")),
      (e: Error) => e instanceof ArtifactError && /the artifact is a character device, not a regular file/.test(e.message),
    );
    await assert.rejects(readArtifact(f("fifo.png")), /the artifact is a named pipe \(FIFO\)/);
  });

  test("the CLI: a FIFO image exits 1 at once with one line; /dev/zero as --mask too", () => {
    const r = nti(["invert", f("fifo.png"), "--prompt", "a red circle", "--model", TINY_MODEL, "--out", f("fifo-out")]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^nti: .*fifo.png: the image is a named pipe \(FIFO\), not a regular file\n$/);
    assert.ok(!existsSync(f("fifo-out")), "no output folder left");
    const m = nti(["edit", tinyArtifactFile, "--prompt", "a blue circle", "--model", TINY_MODEL, "--mask", "/dev/zero", "--out", f("mask-out")]);
    assert.equal(m.code, 1, m.stderr);
    assert.match(m.stderr, /the mask is a character device, not a regular file/);
    assert.ok(!existsSync(f("mask-out")), "no output folder left");
  });

  test("the worker: a FIFO job fails, and the worker takes the next job", async () => {
    const client = new EngineClient(path.join(__dirname, "helpers/worker-entry.cjs"));
    try {
      const job = { modelDir: TINY_MODEL, prompt: "a red circle", settings: { method: "ddim" as const, steps: 2 } };
      await assert.rejects(client.invert({ ...job, imagePath: f("fifo.png"), outDir: f("worker-fifo") }), /named pipe \(FIFO\)/);
      const done = await client.invert({ ...job, imagePath: sourceImage, outDir: f("worker-next") });
      assert.ok(existsSync(done.artifact));
    } finally {
      await client.dispose();
    }
  });
});

describe("4. an artifact never chooses the model folder", () => {
  test("a header naming ./evilmodel: the CLI loads no folder from it", () => {
    const work = f("evil-cwd");
    mkdirSync(work);
    cpSync(TINY_MODEL, path.join(work, "evilmodel"), { recursive: true }); // a working model, so loading it would succeed
    const a = structuredClone(tinyArtifact);
    a.header.model.dir = "./evilmodel";
    const file = path.join(work, "evil.nti");
    writeFileSync(file, encodeArtifact(a));
    const r = nti(["edit", file, "--prompt", "a blue circle"], work);
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /evil.nti was made with model "[^"]+" \(nti.json sha256 [0-9a-f]{12}…\), which is none of the known models \(shapes-tiny\): pass --model/,
    );
    // the bundled model is known, but it is not the one: named with the match hint absent
    const wrong = nti(["edit", file, "--prompt", "a blue circle", "--model", SHAPES_MODEL], work);
    assert.equal(wrong.code, 1);
    assert.match(
      wrong.stderr,
      /was made with model "[^"]+" .*not with the one at .*shapes-tiny: pass --model with the folder it was made with, or re-invert the image/,
    );
    // the folder it was really made with, given by the user, works
    const right = nti(["edit", file, "--prompt", "a blue circle", "--model", TINY_MODEL, "--out", path.join(work, "out"), "--json"], work);
    assert.equal(right.code, 0, right.stderr);
  });

  test("an artifact of the bundled model edits without --model: found in models.json by its hash", () => {
    const out = f("bundled");
    const inv = nti([
      "invert",
      path.join(ROOT, "media/samples/two-shapes.png"),
      "--prompt",
      "a blue circle and a green square on a gray background",
      "--method",
      "ddim",
      "--steps",
      "3",
      "--out",
      out,
      "--json",
    ]);
    assert.equal(inv.code, 0, inv.stderr);
    const artifact = JSON.parse(inv.stdout).artifact as string;
    const a = decodeArtifact(new Uint8Array(readFileSync(artifact)));
    a.header.model.dir = "/nonexistent/old-install/models/shapes-tiny"; // an extension update moved the bundled model
    writeFileSync(artifact, encodeArtifact(a));
    const r = nti(["edit", artifact, "--prompt", "a red circle and a green square on a gray background", "--json"]);
    assert.equal(r.code, 0, r.stderr);
  });
});

describe("5. non-finite numbers and out-of-range model parameters", () => {
  test("one NaN in z_T, one Inf in the null embeddings: the artifact is refused, naming the tensor", () => {
    const nan = structuredClone(tinyArtifact);
    nan.zT = Float32Array.from(nan.zT);
    nan.zT[7] = NaN;
    assert.throws(
      () => decodeArtifact(encodeArtifact(nan)),
      (e: Error) => e instanceof ArtifactError && /tensor z_T holds NaN at index 7/.test(e.message),
    );
    const inf = structuredClone(tinyArtifact);
    inf.nullEmbeddings = Float32Array.from(inf.nullEmbeddings);
    inf.nullEmbeddings[1234] = Infinity;
    assert.throws(() => decodeArtifact(encodeArtifact(inf)), /tensor null_embeddings holds Infinity at index 1234/);
  });

  test("a graph call with a non-finite input or output is an error naming the graph and the tensor", async () => {
    const file = path.join(TINY_MODEL, "unet/model.onnx");
    const session = await GraphSession.create(file, file);
    const m = JSON.parse(readFileSync(path.join(TINY_MODEL, "nti.json"), "utf8"));
    const [C, S, T, D] = [m.latent_channels, m.latent_size, m.tokenizer.max_length, m.text_hidden_size];
    const feeds = (sample: Float32Array) => ({
      sample: f32(sample, [1, C, S, S]),
      timestep: timestepFeed(500),
      encoder_hidden_states: f32(new Float32Array(T * D), [1, T, D]),
    });
    const withNan = new Float32Array(C * S * S);
    withNan[3] = NaN;
    await assert.rejects(
      session.run(feeds(withNan)),
      (e: Error) => e instanceof NonFiniteError && /unet\/model.onnx: input sample holds NaN at index 3/.test(e.message),
    );
    const huge = new Float32Array(C * S * S).fill(3e38); // finite, but overflows inside the UNet
    await assert.rejects(
      session.run(feeds(huge)),
      (e: Error) => e instanceof NonFiniteError && /unet\/model.onnx: output out_sample holds (NaN|-?Infinity) at index \d+/.test(e.message),
    );
    await session.release();
  });

  const original = () => JSON.parse(readFileSync(path.join(TINY_MODEL, "nti.json"), "utf8"));
  const cases: [string, (m: any) => void, RegExp][] = [
    ["beta_start = -1", (m) => (m.scheduler.beta_start = -1), /scheduler.beta_start must be > 0, got -1/],
    ["beta_end below beta_start", (m) => (m.scheduler.beta_end = m.scheduler.beta_start / 2), /scheduler.beta_end must be >= /],
    ["vae_scaling_factor = 0", (m) => (m.vae_scaling_factor = 0), /vae_scaling_factor must be > 0, got 0/],
    ["an unknown beta schedule", (m) => (m.scheduler.beta_schedule = "cosine"), /beta_schedule "cosine" is not/],
  ];
  for (const [name, mutate, expected] of cases) {
    test(`manifest: ${name} is refused`, () => {
      const m = original();
      mutate(m);
      assert.throws(
        () => validateManifest(m),
        (e: Error) => e instanceof ManifestError && expected.test(e.message),
      );
    });
  }
});

describe("6. a 40,000-character prompt", () => {
  test("the CLI does not crash: the prompt is truncated with a note (ONNX Runtime's command-line recursion avoided)", () => {
    const prompt = "red ".repeat(10_000).trim();
    assert.ok(prompt.length > 39_000);
    const r = nti(["invert", sourceImage, "--prompt", prompt, "--model", TINY_MODEL, "--method", "ddim", "--steps", "2", "--out", f("long"), "--json"]);
    assert.equal(r.signal, null, "no signal (it was SIGSEGV)");
    assert.equal(r.code, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).notes.join(" "), /only its first 75 tokens are used/);
  });
});

describe("8. model folder paths stay inside the folder and are all hashed", () => {
  const copy = (name: string, change: (d: string, m: any) => void) => {
    const d = f(`model-${name}`);
    cpSync(TINY_MODEL, d, { recursive: true });
    const m = JSON.parse(readFileSync(path.join(d, "nti.json"), "utf8"));
    change(d, m);
    writeFileSync(path.join(d, "nti.json"), JSON.stringify(m));
    return d;
  };
  const cases: [string, (d: string, m: any) => void, RegExp][] = [
    [
      "a ../ path",
      (_d, m) => (m.graphs.unet.file = "../tiny/model/unet/model.onnx"),
      /graphs.unet.file "..\/tiny\/model\/unet\/model.onnx": must not contain '..'/,
    ],
    ["an absolute path", (_d, m) => (m.tokenizer.file = "/etc/passwd"), /tokenizer.file "\/etc\/passwd": is an absolute path/],
    [
      "a ../ key in files",
      (_d, m) => (m.files["../../etc/passwd"] = { sha256: "0".repeat(64), bytes: 1 }),
      /files\["..\/..\/etc\/passwd"\]: must not contain '..'/,
    ],
    [
      "a graph not listed in files (tampered)",
      (d, m) => {
        delete m.files["unet/model.onnx"];
        writeFileSync(path.join(d, "unet/model.onnx"), "tampered");
      },
      /graphs.unet.file "unet\/model.onnx" is not listed in files with its sha256/,
    ],
    [
      "a symlink leaving the folder",
      (d) => {
        const target = path.join(d, "tokenizer/tokenizer.json");
        const outside = f("outside-tokenizer.json");
        cpSync(target, outside);
        rmSync(target);
        symlinkSync(outside, target);
      },
      /tokenizer.json resolves to .*outside-tokenizer.json, outside the model folder .*: refused/,
    ],
  ];
  for (const [name, change, expected] of cases) {
    test(name, async () => {
      await assert.rejects(
        Model.open(copy(name.replace(/\W+/g, "-"), change)),
        (e: Error) => e instanceof ModelError && oneLine(e) && expected.test(e.message),
      );
    });
  }
});

describe("9. a process killed while writing", () => {
  test("kill -9 between the temporaries and the renames: the next run removes what it left and takes the stem", async () => {
    const out = f("killed");
    mkdirSync(out);
    const script = `
      const { reserveStem, writeTemp } = require("./src/core/files");
      const { renameSync } = require("node:fs");
      (async () => {
        const out = process.argv[process.argv.length - 1];
        const r = await reserveStem(out, "photo", [".source.png", ".reconstruction.png", ".ddim.png", ".nti"]);
        const temps = [];
        for (const s of [".source.png", ".reconstruction.png", ".ddim.png", ".nti"]) temps.push(await writeTemp(r.stem + s, "partial"));
        renameSync(temps[0], r.stem + ".source.png"); // one file of the set visible, then killed
        process.kill(process.pid, "SIGKILL");
      })();`;
    const r = await nodeScript(script, [out]);
    assert.equal(r.signal, "SIGKILL", r.stderr);
    const left = readdirSync(out);
    assert.ok(left.includes("photo.source.png") && left.includes(".photo.nti-lock") && left.some((n) => n.endsWith(".tmp")), left.join(" "));
    const result = { artifact: tinyArtifact, reconstruction: tinyArtifact.source, ddimReconstruction: tinyArtifact.source, psnr: 30, ddimPsnr: 20, notes: [] };
    const saved = await saveInversion(out, "/elsewhere/photo.png", result);
    assert.equal(saved.artifact, path.join(out, "photo.nti"), "the dead run's stem is free again");
    assert.deepEqual(readdirSync(out).sort(), ["photo.ddim.png", "photo.nti", "photo.reconstruction.png", "photo.source.png"]);
    assert.notEqual(readFileSync(path.join(out, "photo.source.png"), "utf8"), "partial");
  });

  test("a live run's lock and temporaries are left alone; a complete set of a dead run is kept", async () => {
    const out = f("live");
    mkdirSync(out);
    const mine = await reserveStem(out, "photo", [".png", ".json"]);
    const temp = await writeTemp(mine.stem + ".png", "x");
    assert.deepEqual(await removeStale(out), []);
    assert.ok(existsSync(temp));
    const other = await reserveStem(out, "photo", [".png", ".json"]);
    assert.equal(other.stem, path.join(out, "photo-2"), "a held stem is not given twice");
    await Promise.all([mine.release(), other.release(), rm(temp)]);
    // a dead run that had renamed its last file: its set is complete and stays
    writeFileSync(path.join(out, "done.png"), "a");
    writeFileSync(path.join(out, "done.json"), "b");
    writeFileSync(path.join(out, ".done.nti-lock"), JSON.stringify({ host: HOST_ID, pid: 999_999_999, suffixes: [".png", ".json"] }));
    assert.deepEqual(await removeStale(out), [".done.nti-lock"]);
    assert.deepEqual(readdirSync(out).sort(), ["done.json", "done.png"]);
  });
});

describe("10. thread counts", () => {
  test("--threads 1000 is capped to the machine's cores, with a note", async () => {
    const model = await Model.open(TINY_MODEL, { threads: 1000 });
    assert.equal(model.intraOpThreads, availableParallelism());
    assert.match(model.notes.join(" "), new RegExp(`1000 threads asked for, ${availableParallelism()} used`));
    await model.release();
    await assert.rejects(Model.open(TINY_MODEL, { threads: -2 }), /threads must be a whole number >= 0/);
  });
});

describe("11. a failed run leaves no folder it made", () => {
  test("edit and reconstruct with a new --out that fail", () => {
    const editOut = f("new-edit-out");
    const r = nti(["edit", tinyArtifactFile, "--prompt", "a crimson circle", "--model", TINY_MODEL, "--out", editOut]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /does not know the word "crimson"/);
    assert.ok(!existsSync(editOut));
    const recOut = f("new-rec-out");
    const rec = nti(["reconstruct", tinyArtifactFile, "--model", SHAPES_MODEL, "--out", recOut]);
    assert.equal(rec.code, 1);
    assert.ok(!existsSync(recOut));
  });
});

describe("12. header values checked like the CLI's flags", () => {
  const withHeader = (change: (a: InversionArtifact) => void) => {
    const a = structuredClone(tinyArtifact);
    change(a);
    return encodeArtifact(a);
  };
  test("guidance -50 and 1e30 are refused", () => {
    assert.throws(() => decodeArtifact(withHeader((a) => (a.header.settings.guidance = -50))), /settings: guidance must be a number from 1 to 50, got -50/);
    assert.throws(() => decodeArtifact(withHeader((a) => (a.header.settings.guidance = 1e30))), /settings: guidance must be a number from 1 to 50, got 1e\+30/);
  });

  test("an unknown word in the header's prompt, and a wrong token dimension, name the file", async () => {
    const engine = await Engine.open(TINY_MODEL);
    try {
      const unknown = f("unknown-word.nti");
      writeFileSync(
        unknown,
        withHeader((a) => (a.header.prompt = "a crimson circle")),
      );
      await assert.rejects(
        engine.edit(await readArtifact(unknown), { prompts: ["a red circle"] }),
        (e: Error) => e instanceof ArtifactError && e.message.startsWith(unknown) && /its prompt cannot be used: .*"crimson"/.test(e.message),
      );
      const tokens = f("tokens.nti");
      const a = structuredClone(tinyArtifact);
      const D = a.dims.hidden;
      a.dims.tokens = 10;
      a.nullEmbeddings = a.nullEmbeddings.slice(0, (a.nullEmbeddings.length / (77 * D)) * 10 * D);
      writeFileSync(tokens, encodeArtifact(a));
      await assert.rejects(
        engine.reconstruct(await readArtifact(tokens)),
        (e: Error) =>
          e instanceof ArtifactError && e.message.startsWith(tokens) && /null_embeddings \[10, \d+\], source 64 px\) do not fit model/.test(e.message),
      );
    } finally {
      await engine.close();
    }
  });
});

describe("13. model parameters that ask for nothing or for gigabytes", () => {
  const original = () => JSON.parse(readFileSync(path.join(TINY_MODEL, "nti.json"), "utf8"));
  const cases: [string, (m: any) => void, RegExp][] = [
    ["map_resolution = 0", (m) => (m.attention.map_resolution = 0), /attention.map_resolution must be >= 1, got 0/],
    ["max_length = 5e7", (m) => (m.tokenizer.max_length = 5e7), /tokenizer.max_length must be <= 1024, got 50000000/],
    ["attention.tokens not max_length", (m) => (m.attention.tokens = 76), /attention.tokens must be >= 77, got 76/],
    ["image_size 1e6", (m) => ((m.image_size = 1e6), (m.latent_size = 125000)), /image_size must be <= 4096/],
  ];
  for (const [name, mutate, expected] of cases) {
    test(name, () => {
      const m = original();
      mutate(m);
      assert.throws(
        () => validateManifest(m),
        (e: Error) => e instanceof ManifestError && oneLine(e) && expected.test(e.message),
      );
    });
  }
});
