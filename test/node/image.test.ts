/** Image I/O with sharp: orientation, alpha, crop, resize, grayscale, and clear errors on bad files. */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { ImageError, loadImage, modelOutputToRgb, psnr, rgbToModelInput, savePng } from "../../src/core/image";
import { encodeImage, Run } from "../../src/core/inversion";
import { Model } from "../../src/core/model";
import { TINY_MODEL, relativeError, tinyFixtures } from "./helpers/fixtures";

const dir = mkdtempSync(path.join(tmpdir(), "nti-image-"));

/** An RGB image made of vertical bands of the given colours. */
async function bands(file: string, width: number, height: number, colours: [number, number, number][], opts: { orientation?: number } = {}) {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const c = colours[Math.floor((x * colours.length) / width)];
      raw.set(c, 3 * (y * width + x));
    }
  }
  let img = sharp(raw, { raw: { width, height, channels: 3 } });
  if (opts.orientation) img = img.withMetadata({ orientation: opts.orientation });
  await img.toFile(file);
}

const pixel = (rgb: Uint8Array, size: number, x: number, y: number) => Array.from(rgb.subarray(3 * (y * size + x), 3 * (y * size + x) + 3));
const near = (a: number[], b: number[], tol = 3) => a.every((v, i) => Math.abs(v - b[i]) <= tol);

test("a wide image is centre-cropped to a square and resized", async () => {
  const file = path.join(dir, "wide.png");
  await bands(file, 300, 100, [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
  ]);
  const img = await loadImage(file, 64);
  assert.equal(img.rgb.length, 64 * 64 * 3);
  assert.deepEqual([img.width, img.height], [300, 100]);
  for (const [x, y] of [
    [0, 0],
    [32, 32],
    [63, 63],
  ])
    assert.ok(near(pixel(img.rgb, 64, x, y), [0, 255, 0]), `pixel ${x},${y}`);
  assert.match(img.notes.join(";"), /centre-cropped/);
});

test("EXIF orientation is honoured", async () => {
  // 2:1, left half red, right half blue, tagged "rotate 90 clockwise": upright it is 1:2, red on top
  const file = path.join(dir, "rotated.jpg");
  await bands(
    file,
    200,
    100,
    [
      [255, 0, 0],
      [0, 0, 255],
    ],
    { orientation: 6 },
  );
  const img = await loadImage(file, 32);
  assert.deepEqual([img.width, img.height], [100, 200]);
  // the centre square of the upright image straddles the red/blue border horizontally
  assert.ok(pixel(img.rgb, 32, 16, 2)[0] > 200 && pixel(img.rgb, 32, 16, 2)[2] < 60, "top is red");
  assert.ok(pixel(img.rgb, 32, 16, 29)[2] > 200 && pixel(img.rgb, 32, 16, 29)[0] < 60, "bottom is blue");
  assert.match(img.notes.join(";"), /orientation 6/);
});

test("transparency is flattened onto white; grayscale becomes RGB", async () => {
  const file = path.join(dir, "alpha.png");
  await sharp({ create: { width: 16, height: 16, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
    .png()
    .toFile(file);
  const img = await loadImage(file, 16);
  assert.ok(img.rgb.every((v) => v === 255));
  assert.match(img.notes.join(";"), /transparency/);
  const gray = path.join(dir, "gray.png");
  await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 90, g: 90, b: 90 } } })
    .toColourspace("b-w")
    .png()
    .toFile(gray);
  const g = await loadImage(gray, 16);
  assert.ok(near(pixel(g.rgb, 16, 5, 5), [90, 90, 90], 1));
});

test("bad files give one clear ImageError naming the file", async () => {
  const empty = path.join(dir, "empty.png");
  writeFileSync(empty, "");
  const text = path.join(dir, "notes.png");
  writeFileSync(text, "this is not an image\n");
  const missing = path.join(dir, "missing.png");
  for (const [file, pattern] of [
    [empty, /is empty/],
    [text, /not an image/],
    [missing, /cannot read it \(ENOENT\)/],
  ] as const) {
    await assert.rejects(
      loadImage(file, 64),
      (e: Error) => e instanceof ImageError && e.message.startsWith(file) && pattern.test(e.message) && !e.message.includes("\n"),
    );
  }
});

test("model input/output conversions round-trip and PSNR is right", async () => {
  const rgb = Uint8Array.from({ length: 4 * 4 * 3 }, (_, i) => (i * 37) % 256);
  assert.deepEqual(modelOutputToRgb(rgbToModelInput(rgb, 4), 4), rgb);
  const other = Uint8Array.from(rgb, (v) => (v === 255 ? 254 : v + 1));
  assert.ok(Math.abs(psnr(rgb, other) - 10 * Math.log10(255 ** 2)) < 1e-9);
  assert.equal(psnr(rgb, rgb), Infinity);
});

test("the fixture image saved as PNG loads back unchanged and encodes to the reference's z_0", async () => {
  const fx = tinyFixtures();
  const file = path.join(dir, "fixture.png");
  const source = fx.tensors.image.data as Uint8Array;
  await savePng(file, source, 64);
  const img = await loadImage(file, 64);
  assert.deepEqual(img.rgb, source);
  const model = await Model.open(TINY_MODEL);
  try {
    const z0 = await encodeImage(new Run(model, model.scheduler(50)), img.rgb);
    assert.ok(relativeError(z0, fx.f32("latent_z0")) < 1e-5);
  } finally {
    await model.release();
  }
});
