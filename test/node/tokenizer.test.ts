// PromptTokenizer against Python's ids (test/fixtures/tokenizer/expected.json, from
// `.venv/bin/python -m exporter.tokenizer_fixtures`), for the word-level tokenizer.json files the project
// ships and for a small CLIP BPE vocabulary in the vocab.json + merges.txt layout.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import { PromptTokenizer, type TokenizerSpec } from "../../src/core/tokenizer";

// The package runs .ts as CommonJS (no "type": "module"), so __dirname is there and top-level await is not.
const ROOT = path.resolve(__dirname, "../..");
const FIXTURES = path.join(ROOT, "test/fixtures/tokenizer");
const CLIP_DIR = path.join(FIXTURES, "clip-bpe");

interface ExpectedCase {
  prompt: string;
  ids: number[];
  tokens: string[];
  sequence: number[];
  untruncated_length: number;
}
interface ExpectedTokenizer {
  folder: string;
  cases: ExpectedCase[];
  word_token_indices: { prompt: string; word_index: number; indices: number[] }[];
  word_indices: { prompt: string; word: string; indices: number[] }[];
}
interface Expected {
  max_length: number;
  tokenizers: Record<string, ExpectedTokenizer>;
}

// Read synchronously: the tests are generated from it.
const expected: Expected = JSON.parse(readFileSync(path.join(FIXTURES, "expected.json"), "utf8"));
const loaded = new Map<string, Promise<PromptTokenizer>>();
function tokenizerNamed(name: string): Promise<PromptTokenizer> {
  if (!loaded.has(name)) loaded.set(name, PromptTokenizer.fromFolder(path.join(ROOT, expected.tokenizers[name].folder)));
  return loaded.get(name)!;
}

const asNumbers = (ids: BigInt64Array) => Array.from(ids, Number);

async function withTempDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), "nti-tokenizer-"));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

for (const [name, reference] of Object.entries(expected.tokenizers)) {
  test(`${name}: ids, tokens, lengths and sequences equal Python's for ${reference.cases.length} prompts`, async () => {
    const tokenizer = await tokenizerNamed(name);
    assert.equal(tokenizer.maxLength, expected.max_length);
    for (const c of reference.cases) {
      const encoded = tokenizer.encode(c.prompt);
      const label = `${name} ${JSON.stringify(c.prompt)}`;
      assert.deepEqual(asNumbers(encoded.ids), c.ids, `ids of ${label}`);
      assert.deepEqual(encoded.tokens, c.tokens, `tokens of ${label}`);
      assert.equal(encoded.length, c.tokens.length, `length of ${label}`);
      assert.equal(encoded.truncated, c.untruncated_length > expected.max_length, `truncated of ${label}`);
      assert.deepEqual(tokenizer.sequence(c.prompt), c.sequence, `sequence of ${label}`);
    }
  });

  test(`${name}: word token indices equal exporter.reference.Tokens`, async () => {
    const tokenizer = await tokenizerNamed(name);
    for (const q of reference.word_token_indices) {
      assert.deepEqual(tokenizer.wordTokenIndices(q.prompt, q.word_index), q.indices, `${q.prompt} [${q.word_index}]`);
    }
    for (const q of reference.word_indices) {
      assert.deepEqual(tokenizer.wordIndices(q.prompt, q.word), q.indices, `${q.prompt} / ${q.word}`);
    }
  });

  test(`${name}: encodeBatch concatenates the padded rows`, async () => {
    const tokenizer = await tokenizerNamed(name);
    const prompts = reference.cases.slice(0, 4).map((c) => c.prompt);
    const batch = tokenizer.encodeBatch(prompts);
    assert.equal(batch.length, prompts.length * tokenizer.maxLength);
    assert.deepEqual(
      asNumbers(batch),
      reference.cases.slice(0, 4).flatMap((c) => c.ids),
    );
    assert.equal(tokenizer.encodeBatch([]).length, 0);
  });
}

for (const folder of ["test/fixtures/tiny/model", "models/shapes-tiny"]) {
  test(`${folder}: special ids and max length agree with nti.json`, async () => {
    const nti = JSON.parse(await readFile(path.join(ROOT, folder, "nti.json"), "utf8")).tokenizer;
    const spec: TokenizerSpec = {
      maxLength: nti.max_length,
      bosTokenId: nti.bos_token_id,
      eosTokenId: nti.eos_token_id,
      padTokenId: nti.pad_token_id,
      unkTokenId: nti.unk_token_id,
    };
    const fromFiles = await PromptTokenizer.fromFolder(path.join(ROOT, folder, "tokenizer"));
    const fromSpec = await PromptTokenizer.fromFolder(path.join(ROOT, folder, "tokenizer"), spec);
    for (const tokenizer of [fromFiles, fromSpec]) {
      assert.equal(tokenizer.maxLength, spec.maxLength);
      assert.equal(tokenizer.bosTokenId, spec.bosTokenId);
      assert.equal(tokenizer.eosTokenId, spec.eosTokenId);
      assert.equal(tokenizer.padTokenId, spec.padTokenId);
      assert.deepEqual(asNumbers(tokenizer.encode("").ids).slice(0, 3), nti.empty_prompt_ids_head);
      // The unknown id is private; an unknown word shows it.
      assert.equal(Number(tokenizer.encode("zebra").ids[1]), spec.unkTokenId);
    }
  });
}

test("CLIP BPE folder: special ids come from the vocabulary, pad is the end token", async () => {
  const vocab: Record<string, number> = JSON.parse(await readFile(path.join(CLIP_DIR, "vocab.json"), "utf8"));
  const tokenizer = await tokenizerNamed("clip-bpe");
  assert.equal(tokenizer.bosTokenId, vocab["<|startoftext|>"]);
  assert.equal(tokenizer.eosTokenId, vocab["<|endoftext|>"]);
  assert.equal(tokenizer.padTokenId, vocab["<|endoftext|>"]);
  assert.equal(tokenizer.maxLength, 77);
});

test("truncation keeps the start token, cuts tokens and ends with the end token", async () => {
  for (const name of Object.keys(expected.tokenizers)) {
    const tokenizer = await tokenizerNamed(name);
    const fits = tokenizer.encode(Array(75).fill("red").join(" "));
    assert.equal(fits.truncated, false, name);
    assert.equal(fits.length, 77, name);
    const over = tokenizer.encode(Array(76).fill("red").join(" "));
    assert.equal(over.truncated, true, name);
    assert.equal(over.length, 77, name);
    assert.equal(Number(over.ids[0]), tokenizer.bosTokenId, name);
    assert.equal(Number(over.ids[76]), tokenizer.eosTokenId, name);
    assert.equal(over.tokens.length, 77, name);
    // Like exporter.reference.Tokens.sequence, a long prompt's sequence is its first 77 ids, no end token.
    const sequence = tokenizer.sequence(Array(100).fill("red").join(" "));
    assert.equal(sequence.length, 77);
    assert.notEqual(sequence[76], tokenizer.eosTokenId);
  }
});

test("a smaller max length from the spec pads and truncates to it", async () => {
  const tokenizer = await PromptTokenizer.fromFolder(CLIP_DIR, { maxLength: 8 });
  const encoded = tokenizer.encode("a red circle on a white background with a blue square");
  assert.equal(encoded.ids.length, 8);
  assert.equal(encoded.truncated, true);
  assert.deepEqual(encoded.tokens, ["<|startoftext|>", "a</w>", "red</w>", "circle</w>", "on</w>", "a</w>", "white</w>", "<|endoftext|>"]);
  assert.equal(tokenizer.encodeBatch(["a", "b"]).length, 16);
});

test("unknown words of a word-level vocabulary are reported once each, in order", async () => {
  const tiny = await tokenizerNamed("tiny");
  const encoded = tiny.encode("a Zebra in the savanna with a zebra foal");
  assert.deepEqual(encoded.unknownWords, ["zebra", "savanna", "foal"]);
  assert.equal(encoded.tokens.filter((t) => t === "<|unk|>").length, 4);
  assert.deepEqual(tiny.encode("a red circle on a white background").unknownWords, []);
  assert.deepEqual(tiny.encode("café 🐱").unknownWords, ["café", "🐱"]);
  // Only what survives truncation is reported.
  assert.deepEqual(tiny.encode(Array(80).fill("red").join(" ") + " zebra").unknownWords, []);
  // A byte-level BPE has no unknown words.
  const clip = await tokenizerNamed("clip-bpe");
  assert.deepEqual(clip.encode("a zebra in the savanna 🦓").unknownWords, []);
});

test("wordTokenIndices rejects a word index outside the prompt", async () => {
  const tokenizer = await tokenizerNamed("tiny");
  assert.throws(() => tokenizer.wordTokenIndices("a red circle", 3), RangeError);
  assert.throws(() => tokenizer.wordTokenIndices("a red circle", -1), RangeError);
  assert.deepEqual(tokenizer.wordIndices("a red circle", "blue"), []);
});

test("special tokens named in special_tokens_map.json are used (SD 2.x pads with '!')", async () => {
  await withTempDir(async (dir) => {
    await cp(CLIP_DIR, dir, { recursive: true });
    const map = { bos_token: "<|startoftext|>", eos_token: "<|endoftext|>", pad_token: "!", unk_token: "<|endoftext|>" };
    await writeFile(path.join(dir, "special_tokens_map.json"), JSON.stringify(map));
    const tokenizer = await PromptTokenizer.fromFolder(dir);
    const vocab: Record<string, number> = JSON.parse(await readFile(path.join(dir, "vocab.json"), "utf8"));
    assert.equal(tokenizer.padTokenId, vocab["!"]);
    const ids = asNumbers(tokenizer.encode("a cat").ids);
    assert.deepEqual(ids.slice(0, 5), [vocab["<|startoftext|>"], vocab["a</w>"], vocab["cat</w>"], vocab["<|endoftext|>"], vocab["!"]]);
  });
});

test("a folder without a tokenizer gives one clear line naming the folder", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(PromptTokenizer.fromFolder(dir), (err: Error) => {
      assert.equal(err.message, `${dir}: no tokenizer.json, and no vocab.json + merges.txt`);
      return true;
    });
    const missing = path.join(dir, "nowhere");
    await assert.rejects(PromptTokenizer.fromFolder(missing), { message: `${missing}: tokenizer folder not found` });
    await writeFile(path.join(dir, "vocab.json"), "{}");
    await assert.rejects(PromptTokenizer.fromFolder(dir), { message: `${dir}: has vocab.json but no merges.txt (CLIP BPE needs both)` });
  });
});

test("broken or inconsistent tokenizer files are reported with the file or folder", async () => {
  await withTempDir(async (dir) => {
    await writeFile(path.join(dir, "tokenizer.json"), "{ not json");
    await assert.rejects(PromptTokenizer.fromFolder(dir), (err: Error) => err.message.startsWith(`${path.join(dir, "tokenizer.json")}: not valid JSON`));

    const tiny = path.join(ROOT, expected.tokenizers.tiny.folder);
    await cp(path.join(tiny, "tokenizer.json"), path.join(dir, "tokenizer.json"));
    await assert.rejects(PromptTokenizer.fromFolder(dir, { bosTokenId: 4000 }), {
      message: `${dir}: bos token id 4000 is not in the vocabulary`,
    });

    // Without an unknown token a word-level vocabulary cannot encode a word it does not know.
    const json = JSON.parse(await readFile(path.join(dir, "tokenizer.json"), "utf8"));
    delete json.model.unk_token;
    await writeFile(path.join(dir, "tokenizer.json"), JSON.stringify(json));
    const noUnk = await PromptTokenizer.fromFolder(dir);
    assert.deepEqual(asNumbers(noUnk.encode("a red circle").ids).slice(0, 5), asNumbers((await tokenizerNamed("tiny")).encode("a red circle").ids).slice(0, 5));
    assert.throws(() => noUnk.encode("a zebra"), { message: `${dir}: "zebra" is not in the vocabulary, which has no unknown token` });
  });
});
