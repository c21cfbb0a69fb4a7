/** Model families (src/core/families.ts): chosen by the manifest, SD 1.x by default, unknown ones refused. */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { FAMILIES } from "../../src/core/families";
import { Run, encodePrompts } from "../../src/core/inversion";
import { validateManifest } from "../../src/core/manifest";
import { Model } from "../../src/core/model";
import { TINY_MODEL } from "./helpers/fixtures";

const manifest = () => JSON.parse(readFileSync(path.join(TINY_MODEL, "nti.json"), "utf8"));

test("SD 1.x and 2.x are two entries; a manifest without a family is SD 1.x; others are refused", () => {
  assert.deepEqual(Object.keys(FAMILIES), ["sd1", "sd2"]);
  assert.equal(validateManifest(manifest()).family, "sd1", "the exporter writes it");
  const { family: _written, ...older } = manifest(); // a folder from before the field
  assert.equal(validateManifest(older).family, undefined);
  assert.equal(validateManifest({ ...manifest(), family: "sd2" }).family, "sd2");
  assert.throws(() => validateManifest({ ...manifest(), family: "sdxl" }), /nti.json: family "sdxl" is not one of "sd1", "sd2"/);
});

test("the family encodes the prompts: the same conditioning for sd1 and sd2 on one text encoder", async () => {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), "nti-family-")), "model");
  cpSync(TINY_MODEL, dir, { recursive: true });
  writeFileSync(path.join(dir, "nti.json"), JSON.stringify({ ...manifest(), family: "sd2" }));
  const [sd1, sd2] = await Promise.all([Model.open(TINY_MODEL), Model.open(dir)]);
  try {
    assert.equal(sd1.family, FAMILIES.sd1);
    assert.equal(sd2.family, FAMILIES.sd2);
    const prompts = ["a red circle", ""];
    const a = await encodePrompts(new Run(sd1, sd1.scheduler(10)), prompts);
    const b = await encodePrompts(new Run(sd2, sd2.scheduler(10)), prompts);
    assert.equal(a.length, 2 * sd1.embeddingLength);
    assert.deepEqual(b, a);
  } finally {
    await Promise.all([sd1.release(), sd2.release()]);
  }
});
