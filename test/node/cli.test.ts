/** The `nti` CLI as a user runs it: JSON output, saved files, and one clear line on bad input. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { ROOT, TINY_MODEL } from "./helpers/fixtures";

const dir = mkdtempSync(path.join(tmpdir(), "nti-cli-"));
const SAMPLE = path.join(ROOT, "media/samples/two-shapes.png");
const PROMPT = "a blue circle and a green square on a gray background";

function nti(...args: string[]) {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "src/cli/nti.ts"), ...args], { cwd: ROOT, encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("invert --json on the bundled shapes-tiny model, then reconstruct from the artifact", () => {
  const out = path.join(dir, "out");
  const r = nti("invert", SAMPLE, "--prompt", PROMPT, "--steps", "20", "--inner-steps", "5", "--out", out, "--json", "--plot");
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  for (const key of ["artifact", "reconstruction", "ddimReconstruction", "source", "lossPlot"]) assert.ok(existsSync(j[key]), key);
  assert.equal(j.model, "shapes-tiny");
  assert.equal(j.lossPerStep.length, 20);
  assert.ok(j.unetCalls > 0 && j.unetBackward > 0 && j.seconds > 0);
  // the trained model: null-text beats DDIM-only clearly even with a short schedule
  assert.ok(j.psnr > j.ddimPsnr + 3, `null-text ${j.psnr} dB vs DDIM ${j.ddimPsnr} dB`);
  assert.ok(readdirSync(out).every((f) => !f.endsWith(".tmp")));

  const rec = nti("reconstruct", j.artifact, "--json");
  assert.equal(rec.code, 0, rec.stderr);
  const back = JSON.parse(rec.stdout);
  assert.ok(Math.abs(back.psnr - j.psnr) < 1e-6, "the artifact reproduces the same reconstruction");
});

test("invert --schedule fast: the lean loop from the prompt's embedding, fewer passes, flags over the schedule", () => {
  const r = nti(
    "invert",
    SAMPLE,
    "--prompt",
    PROMPT,
    "--steps",
    "20",
    "--schedule",
    "fast",
    "--lr",
    "0.02",
    "--out",
    path.join(dir, "fast"),
    "--json",
    "--no-ddim",
  );
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.settings.innerLoop, "lean");
  assert.equal(j.settings.nullInit, "prompt");
  assert.equal(j.settings.innerSteps, 3);
  assert.equal(j.settings.learningRate, 0.02);
  assert.ok(j.iterationsPerStep.every((k: number) => k >= 1 && k <= 3));
  const inner = j.iterationsPerStep.reduce((a: number, b: number) => a + b, 0);
  assert.equal(j.unetCalls, 20 + 20 + inner, "inversion, the cond noise per step and the gradient calls: nothing else");
  assert.ok(j.psnr > 25, `fast schedule PSNR ${j.psnr}`);
  assert.ok(j.loadSeconds > 0 && j.peakRssMb > 0 && j.onnxSeconds <= j.seconds);
});

test("each method runs from the CLI", () => {
  for (const method of ["npi", "direct", "ddim"]) {
    const r = nti("invert", SAMPLE, "--prompt", PROMPT, "--method", method, "--steps", "10", "--model", TINY_MODEL, "--out", path.join(dir, method), "--json");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).method, method);
  }
});

test("bad input: exit code 1, one line on stderr, no stack trace, nothing written", async () => {
  const notImage = path.join(dir, "notes.png");
  writeFileSync(notImage, "hello");
  const brokenModel = path.join(dir, "no-model");
  const out = path.join(dir, "bad-out");
  const cases: [string[], RegExp][] = [
    [["invert", notImage, "--prompt", PROMPT, "--out", out], /notes.png: not an image/],
    [["invert", path.join(dir, "missing.png"), "--prompt", PROMPT], /missing.png: no such file/],
    [["invert", SAMPLE, "--prompt", PROMPT, "--model", brokenModel, "--out", out], /no-model does not exist/],
    [["invert", SAMPLE, "--prompt", "a zebra", "--out", out], /does not know the word "zebra"/],
    [["invert", SAMPLE, "--out", out], /needs --prompt/],
    [["invert", SAMPLE, "--prompt", PROMPT, "--steps", "many", "--out", out], /--steps needs a number/],
    [["invert", SAMPLE, "--prompt", PROMPT, "--method", "magic", "--out", out], /method "magic" is not one of/],
    [["invert", SAMPLE, "--prompt", PROMPT, "--schedule", "quick", "--out", out], /schedule must be one of paper, fast/],
    [["invert", SAMPLE, "--prompt", PROMPT, "--inner-loop", "eager", "--out", out], /inner loop must be one of notebook, lean/],
    [["invert", SAMPLE, "--prompt", PROMPT, "--frobnicate"], /Unknown option '--frobnicate'/],
    [["reconstruct", notImage], /not a valid inversion artifact/],
    [["dance"], /unknown command "dance"/],
  ];
  for (const [args, pattern] of cases) {
    const r = nti(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: exit ${r.code}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(lines[0], pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
  // bad settings and prompts are refused before the output folder is made
  assert.ok(!existsSync(out), "no output folder for failed runs");
  // the image is not touched
  assert.equal((await sharp(SAMPLE).metadata()).width, 256);
});

test("edit and attention on a saved inversion", async () => {
  const out = path.join(dir, "edit");
  const inv = nti("invert", SAMPLE, "--prompt", PROMPT, "--steps", "20", "--inner-steps", "5", "--out", out, "--json", "--no-ddim");
  assert.equal(inv.code, 0, inv.stderr);
  const artifact = JSON.parse(inv.stdout).artifact;
  const mask = path.join(dir, "mask.png");
  await sharp({ create: { width: 64, height: 64, channels: 3, background: "#000" } })
    .composite([{ input: { create: { width: 32, height: 32, channels: 3, background: "#fff" } }, left: 0, top: 32 }])
    .png()
    .toFile(mask);
  const r = nti("edit", artifact, "--prompt", PROMPT.replace("blue", "red"), "--blend", "blue", "--mask", mask, "--reweight", "red=2", "--json");
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.mode, "replace");
  assert.equal(j.images.length, 1);
  for (const f of [...j.images, j.attentionMaps, j.mask]) assert.ok(existsSync(f), f);
  const maps = JSON.parse(readFileSync(j.attentionMaps, "utf8"));
  assert.deepEqual(
    maps.prompts.map((p: { tokens: unknown[] }) => p.tokens.length),
    [11, 11],
  );
  assert.equal(maps.prompts[1].tokens[1].token, "red");
  assert.equal(maps.prompts[1].tokens[1].map.length, 64);
  // the user mask (lower-left quarter) is part of the blend mask
  const m = await sharp(j.mask).raw().toBuffer();
  assert.equal(m[12 * 16 + 3], 255);

  const a = nti("attention", artifact, "--json");
  assert.equal(a.code, 0, a.stderr);
  const att = JSON.parse(a.stdout);
  assert.equal(att.files.length, 11);
  assert.match(att.files[1], /02-blue\.png$/);
  assert.equal((await sharp(att.files[1]).metadata()).width, 64);

  const bad = nti("edit", artifact, "--prompt", "a red circle", "--mode", "replace");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr.trim(), /^nti: replace swaps words one for one.*use refine$/);
});

test("the README's usage lines are the ones `nti --help` prints (the usage text is written once)", () => {
  const help = nti("--help").stdout.replace(/\s+/g, " ");
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/```\n(nti [\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length >= 2, "README shows the invert and edit usage");
  for (const block of blocks) {
    // each command's usage, joined over its continuation lines
    for (const usage of block.split(/\n(?=nti )/).map((u) => u.replace(/\s+/g, " ").trim())) {
      assert.ok(help.includes(usage), `README usage not in nti --help: ${usage}`);
    }
  }
});
