/**
 * Prompt -> token ids for the text encoder, as the exporter's Python does it.
 *
 * A model folder's `tokenizer/` holds either a `tokenizer.json` (HF tokenizers format; the word-level
 * tokenizers of the random models, or a fast CLIP tokenizer) or CLIP's `vocab.json` + `merges.txt` (as SD 1.x
 * diffusers folders ship). Both are run through `@huggingface/tokenizers`; for the second we build the
 * tokenizer.json that `transformers.CLIPTokenizer` builds from the same two files. Padding and truncation
 * are done here, CLIP style: start token, at most maxLength - 2 tokens, end token, then padding.
 *
 * The ids must equal Python's exactly (test/fixtures/tokenizer/expected.json, written by
 * `exporter/tokenizer_fixtures.py`), so the places where the JS library differs from the Rust one are
 * patched below (see adaptToRustSemantics and lowercaseLikeRust).
 */

import { stat } from "node:fs/promises";
import { MAX_BYTES, readRegularFile } from "./files";
import type { Manifest } from "./manifest";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

/** The "tokenizer" section of a model folder's nti.json (ids the exporter read from the same tokenizer). */
export interface TokenizerSpec {
  maxLength: number;
  bosTokenId?: number;
  eosTokenId?: number;
  padTokenId?: number;
  unkTokenId?: number;
}

export interface EncodedPrompt {
  /** Exactly maxLength ids: bos, tokens..., eos, then pad. */
  ids: BigInt64Array;
  /** The unpadded token strings, bos and eos included (after truncation). */
  tokens: string[];
  /** Number of unpadded tokens, bos and eos included. */
  length: number;
  /** True when the prompt had more tokens than fit between bos and eos. */
  truncated: boolean;
  /** Words the vocabulary does not know (word-level vocabularies), in order of first appearance. */
  unknownWords: string[];
}

const DEFAULT_MAX_LENGTH = 77;
const CLIP_BOS = "<|startoftext|>";
const CLIP_EOS = "<|endoftext|>";
/** transformers' tokenizer_config uses a huge sentinel for "no limit"; such values are not a length. */
const MAX_SENSIBLE_LENGTH = 10_000;

/** CLIP's word-splitting regex (transformers CLIPTokenizer / OpenAI simple_tokenizer). */
const CLIP_SPLIT_REGEX = "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

/**
 * Rust tokenizers' `Whitespace` pre-tokenizer is `\w+|[^\w\s]+` with Unicode classes (regex crate). The JS
 * library's version uses ASCII `\w`, which splits "café" in two and would shift every later position, so we
 * swap in a Split with the Unicode definition of `\w` (the regex crate's, Join_Control included) and `\s`.
 */
const UNICODE_WORD_CHARS = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}";
const RUST_WHITESPACE_PRE_TOKENIZER = {
  type: "Split",
  pattern: { Regex: `[${UNICODE_WORD_CHARS}]+|[^${UNICODE_WORD_CHARS}\\p{White_Space}]+` },
  behavior: "Removed",
  invert: true,
};

type JsonObject = Record<string, unknown>;

/**
 * The part of the library's Tokenizer used here, typed locally: its ids can be null (see contentTokens),
 * and its declaration files use extensionless imports that NodeNext resolution cannot follow, which
 * would leave every call typed `any`.
 */
interface LibraryTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: (number | null | undefined)[]; tokens: string[] };
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isTokenId(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

/** A tokenizer file's text: a regular file of at most MAX_BYTES.json. */
async function readText(file: string): Promise<string> {
  try {
    return (await readRegularFile(file, MAX_BYTES.json)).toString("utf8");
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

async function readJson(file: string): Promise<unknown> {
  const text = await readText(file);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not valid JSON (${(err as Error).message})`);
  }
}

async function readJsonObjectIfPresent(file: string): Promise<JsonObject> {
  if (!(await isFile(file))) return {};
  const value = await readJson(file);
  if (!isObject(value)) throw new Error(`${file}: expected a JSON object`);
  return value;
}

/** A special token in tokenizer_config.json / special_tokens_map.json: "text" or {"content": "text", ...}. */
function specialTokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  return undefined;
}

/** Applies `visit` to every node of a normalizer / pre-tokenizer tree (Sequence nodes included). */
function mapTree(node: unknown, visit: (node: JsonObject) => JsonObject): unknown {
  if (!isObject(node)) return node;
  const visited = visit(node);
  const children = ["normalizers", "pretokenizers"] as const;
  const copy: JsonObject = { ...visited };
  for (const key of children) {
    if (Array.isArray(visited[key])) copy[key] = (visited[key] as unknown[]).map((child) => mapTree(child, visit));
  }
  return copy;
}

function treeHasType(node: unknown, type: string): boolean {
  let found = false;
  mapTree(node, (n) => {
    if (n.type === type) found = true;
    return n;
  });
  return found;
}

/** tokenizer.json with the JS library's departures from Rust tokenizers patched out (see the constants above). */
function adaptToRustSemantics(tokenizerJson: JsonObject): JsonObject {
  return {
    ...tokenizerJson,
    pre_tokenizer: mapTree(tokenizerJson.pre_tokenizer ?? null, (node) => (node.type === "Whitespace" ? { ...RUST_WHITESPACE_PRE_TOKENIZER } : node)),
  };
}

/**
 * JS toLowerCase maps a word-final capital sigma to "ς"; Rust lowercases character by character and gives
 * "σ" (Python's tokenizers, hence the exporter, agree with Rust). Final sigma is the only context-dependent
 * lowercase mapping, so turning every "Σ" into "σ" first makes the library's lowercase match Rust's.
 */
function lowercaseLikeRust(text: string): string {
  return text.replaceAll("Σ", "σ");
}

/** The start/end token ids a tokenizer.json's post-processor adds, when it says. */
function postProcessorSpecialIds(postProcessor: unknown): { bos?: number; eos?: number } {
  if (!isObject(postProcessor)) return {};
  switch (postProcessor.type) {
    case "TemplateProcessing": {
      // single: [SpecialToken bos, Sequence A, SpecialToken eos]; ids live in special_tokens[name].ids.
      const single = Array.isArray(postProcessor.single) ? postProcessor.single : [];
      const specials = isObject(postProcessor.special_tokens) ? postProcessor.special_tokens : {};
      const idOf = (item: unknown): number | undefined => {
        if (!isObject(item) || !isObject(item.SpecialToken)) return undefined;
        const entry = specials[String(item.SpecialToken.id)];
        const ids = isObject(entry) && Array.isArray(entry.ids) ? entry.ids : [];
        return ids.length === 1 && isTokenId(ids[0]) ? ids[0] : undefined;
      };
      return { bos: idOf(single[0]), eos: idOf(single[single.length - 1]) };
    }
    case "RobertaProcessing":
    case "BertProcessing": {
      const pairId = (pair: unknown) => (Array.isArray(pair) && isTokenId(pair[1]) ? pair[1] : undefined);
      return { bos: pairId(postProcessor.cls), eos: pairId(postProcessor.sep) };
    }
    default:
      return {};
  }
}

/** What `transformers.CLIPTokenizer(vocab=..., merges=...)` builds from vocab.json + merges.txt. */
function clipTokenizerJson(vocab: Record<string, number>, merges: string[], tokens: { bos: string; eos: string; unk: string }): JsonObject {
  const specials = [...new Set([tokens.bos, tokens.eos, tokens.unk])].filter((t) => t in vocab);
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content) => ({
      id: vocab[content],
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "NFC" }, { type: "Replace", pattern: { Regex: "\\s+" }, content: " " }, { type: "Lowercase" }],
    },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: CLIP_SPLIT_REGEX }, behavior: "Removed", invert: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: {
      type: "RobertaProcessing",
      sep: [tokens.eos, vocab[tokens.eos]],
      cls: [tokens.bos, vocab[tokens.bos]],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: tokens.unk,
      continuing_subword_prefix: "",
      end_of_word_suffix: "</w>",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** merges.txt: an optional "#version" header, then one "left right" pair per line. */
function parseMerges(text: string, file: string): string[] {
  const merges = text.split(/\r?\n/).filter((line, i) => line.trim().length > 0 && !(i === 0 && line.startsWith("#version")));
  const malformed = merges.findIndex((line) => line.split(" ").length !== 2);
  if (malformed >= 0) throw new Error(`${file}: line "${merges[malformed]}" is not a "left right" merge`);
  return merges;
}

function parseVocab(value: unknown, file: string): Record<string, number> {
  if (!isObject(value)) throw new Error(`${file}: expected a {"token": id} object`);
  for (const [token, id] of Object.entries(value)) {
    if (!isTokenId(id)) throw new Error(`${file}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)}`);
  }
  return value as Record<string, number>;
}

/** Everything fromFolder works out before constructing the tokenizer. */
interface LoadedFolder {
  tokenizerJson: JsonObject;
  config: JsonObject;
  /** Special tokens named by tokenizer_config.json / special_tokens_map.json (the latter wins, as in transformers). */
  namedTokens: { bos?: string; eos?: string; pad?: string; unk?: string };
  maxLengthFromFiles?: number;
}

async function loadFolder(dir: string): Promise<LoadedFolder> {
  const tokenizerConfig = await readJsonObjectIfPresent(path.join(dir, "tokenizer_config.json"));
  const specialTokensMap = await readJsonObjectIfPresent(path.join(dir, "special_tokens_map.json"));
  const named = (key: string) => specialTokenText(specialTokensMap[key]) ?? specialTokenText(tokenizerConfig[key]);
  const namedTokens = { bos: named("bos_token"), eos: named("eos_token"), pad: named("pad_token"), unk: named("unk_token") };
  const configLength = tokenizerConfig.model_max_length;
  let maxLengthFromFiles = isTokenId(configLength) && configLength <= MAX_SENSIBLE_LENGTH ? configLength : undefined;

  const tokenizerFile = path.join(dir, "tokenizer.json");
  if (await isFile(tokenizerFile)) {
    const tokenizerJson = await readJson(tokenizerFile);
    if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) {
      throw new Error(`${tokenizerFile}: not a tokenizers file (no "model" section)`);
    }
    const truncation = tokenizerJson.truncation;
    if (maxLengthFromFiles === undefined && isObject(truncation) && isTokenId(truncation.max_length)) {
      maxLengthFromFiles = truncation.max_length;
    }
    return { tokenizerJson, config: tokenizerConfig, namedTokens, maxLengthFromFiles };
  }

  const vocabFile = path.join(dir, "vocab.json");
  const mergesFile = path.join(dir, "merges.txt");
  const [hasVocab, hasMerges] = [await isFile(vocabFile), await isFile(mergesFile)];
  if (hasVocab && hasMerges) {
    const vocab = parseVocab(await readJson(vocabFile), vocabFile);
    const merges = parseMerges(await readText(mergesFile), mergesFile);
    const bos = namedTokens.bos ?? CLIP_BOS;
    const eos = namedTokens.eos ?? CLIP_EOS;
    // CLIP's unknown token is the end token; its byte-level base vocabulary means it is never needed.
    const unk = namedTokens.unk ?? eos;
    for (const token of [bos, eos]) {
      if (!(token in vocab)) throw new Error(`${vocabFile}: special token ${token} is not in the vocabulary`);
    }
    const tokenizerJson = clipTokenizerJson(vocab, merges, { bos, eos, unk });
    return { tokenizerJson, config: tokenizerConfig, namedTokens: { ...namedTokens, bos, eos, unk }, maxLengthFromFiles };
  }

  if (
    !(await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  ) {
    throw new Error(`${dir}: tokenizer folder not found`);
  }
  if (hasVocab) throw new Error(`${dir}: has vocab.json but no merges.txt (CLIP BPE needs both)`);
  throw new Error(`${dir}: no tokenizer.json, and no vocab.json + merges.txt`);
}

export class PromptTokenizer {
  readonly maxLength: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  private readonly unkTokenId: number | undefined;
  private readonly lowercases: boolean;

  private constructor(
    private readonly folder: string,
    private readonly tokenizer: LibraryTokenizer,
    ids: { maxLength: number; bos: number; eos: number; pad: number; unk: number | undefined },
    lowercases: boolean,
  ) {
    this.maxLength = ids.maxLength;
    this.bosTokenId = ids.bos;
    this.eosTokenId = ids.eos;
    this.padTokenId = ids.pad;
    this.unkTokenId = ids.unk;
    this.lowercases = lowercases;
  }

  /** The tokenizer of a model folder, as its (validated) nti.json describes it. */
  static forModel(root: string, manifest: Pick<Manifest, "tokenizer">): Promise<PromptTokenizer> {
    const t = manifest.tokenizer;
    return PromptTokenizer.fromFolder(path.join(root, path.dirname(t.file)), {
      maxLength: t.max_length,
      bosTokenId: t.bos_token_id,
      eosTokenId: t.eos_token_id,
      padTokenId: t.pad_token_id,
      unkTokenId: t.unk_token_id ?? undefined,
    });
  }

  static async fromFolder(tokenizerDir: string, spec?: Partial<TokenizerSpec>): Promise<PromptTokenizer> {
    const { tokenizerJson, config, namedTokens, maxLengthFromFiles } = await loadFolder(tokenizerDir);
    let tokenizer: LibraryTokenizer;
    try {
      tokenizer = new Tokenizer(adaptToRustSemantics(tokenizerJson), config);
    } catch (err) {
      throw new Error(`${tokenizerDir}: cannot build the tokenizer (${(err as Error).message})`);
    }

    const idOf = (token: string | undefined) => (token === undefined ? undefined : tokenizer.token_to_id(token));
    const fromTemplate = postProcessorSpecialIds(tokenizerJson.post_processor);
    const padding = tokenizerJson.padding;
    const model = tokenizerJson.model as JsonObject;
    const modelUnk = typeof model.unk_token === "string" ? model.unk_token : undefined;

    // The spec (nti.json, written by the exporter from this tokenizer) wins; then what the tokenizer
    // files say; then CLIP's names. SD 1.x pads with the end token, hence pad's last fallback.
    const bos = spec?.bosTokenId ?? fromTemplate.bos ?? idOf(namedTokens.bos) ?? idOf(CLIP_BOS);
    const eos = spec?.eosTokenId ?? fromTemplate.eos ?? idOf(namedTokens.eos) ?? idOf(CLIP_EOS);
    const pad = spec?.padTokenId ?? (isObject(padding) && isTokenId(padding.pad_id) ? padding.pad_id : undefined) ?? idOf(namedTokens.pad) ?? eos;
    const unk = spec?.unkTokenId ?? idOf(modelUnk) ?? idOf(namedTokens.unk);
    const maxLength = spec?.maxLength ?? maxLengthFromFiles ?? DEFAULT_MAX_LENGTH;

    if (bos === undefined || eos === undefined || pad === undefined) {
      throw new Error(`${tokenizerDir}: cannot tell the start/end token ids (no ${CLIP_BOS} / ${CLIP_EOS} and none given)`);
    }
    for (const [name, id] of [
      ["bos", bos],
      ["eos", eos],
      ["pad", pad],
      ["unk", unk],
    ] as const) {
      if (id !== undefined && (!isTokenId(id) || tokenizer.id_to_token(id) === undefined)) {
        throw new Error(`${tokenizerDir}: ${name} token id ${id} is not in the vocabulary`);
      }
    }
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new Error(`${tokenizerDir}: max length ${maxLength} leaves no room for the start and end tokens`);
    }
    const lowercases = treeHasType(tokenizerJson.normalizer ?? null, "Lowercase");
    return new PromptTokenizer(tokenizerDir, tokenizer, { maxLength, bos, eos, pad, unk }, lowercases);
  }

  /**
   * Tokens of `text` without start/end tokens, unknown words mapped to the unknown id. `unknownWord[i]` is
   * the word behind token i when that token is the unknown one, else null.
   */
  private contentTokens(text: string): { ids: number[]; tokens: string[]; unknownWord: (string | null)[] } {
    const encoding = this.tokenizer.encode(this.lowercases ? lowercaseLikeRust(text) : text, {
      add_special_tokens: false,
    });
    const ids: number[] = [];
    const tokens: string[] = [];
    const unknownWord: (string | null)[] = [];
    encoding.tokens.forEach((token, i) => {
      const id = encoding.ids[i];
      // A word-level model gives back a word it does not know as-is, with no id (null/undefined), where
      // Rust gives the unknown token; a BPE model has already substituted its unknown token itself.
      if (id !== null && id !== undefined && this.tokenizer.token_to_id(token) !== undefined) {
        ids.push(id);
        tokens.push(token);
        unknownWord.push(null);
        return;
      }
      if (this.unkTokenId === undefined) {
        throw new Error(`${this.folder}: "${token}" is not in the vocabulary, which has no unknown token`);
      }
      ids.push(this.unkTokenId);
      tokens.push(this.tokenText(this.unkTokenId));
      unknownWord.push(token);
    });
    return { ids, tokens, unknownWord };
  }

  /**
   * The words of a small word-level vocabulary (special tokens left out), sorted; null for a vocabulary of
   * more than `limit` entries (a BPE vocabulary spells any word, so listing it would help nobody).
   */
  knownWords(limit = 300): string[] | null {
    const words: string[] = [];
    for (let id = 0; ; id++) {
      const token = this.tokenizer.id_to_token(id);
      if (token === undefined || token === null) break;
      if (id >= limit) return null;
      if (!/^<\|.*\|>$/.test(token) && !/^\[[A-Z]+\]$/.test(token)) words.push(token);
    }
    return words.sort();
  }

  private tokenText(id: number): string {
    return this.tokenizer.id_to_token(id) ?? String(id);
  }

  encode(prompt: string): EncodedPrompt {
    const content = this.contentTokens(prompt);
    const room = this.maxLength - 2;
    const keptIds = content.ids.slice(0, room);
    const ids = new BigInt64Array(this.maxLength).fill(BigInt(this.padTokenId));
    [this.bosTokenId, ...keptIds, this.eosTokenId].forEach((id, i) => (ids[i] = BigInt(id)));
    // Unknown words are reported for the part that was kept; the rest is covered by `truncated`.
    const unknownWords = content.unknownWord.slice(0, room).filter((word): word is string => word !== null);
    return {
      ids,
      tokens: [this.tokenText(this.bosTokenId), ...content.tokens.slice(0, room), this.tokenText(this.eosTokenId)],
      length: keptIds.length + 2,
      truncated: content.ids.length > room,
      unknownWords: [...new Set(unknownWords)],
    };
  }

  /** [prompts.length * maxLength] ids, one padded row per prompt. */
  encodeBatch(prompts: string[]): BigInt64Array {
    const batch = new BigInt64Array(prompts.length * this.maxLength);
    prompts.forEach((prompt, row) => batch.set(this.encode(prompt).ids, row * this.maxLength));
    return batch;
  }

  /**
   * Ids with start and end tokens, no padding, cut to maxLength (exporter/reference.py Tokens.sequence:
   * like it, a prompt that is too long keeps its first maxLength ids, so the end token is cut off).
   */
  sequence(prompt: string): number[] {
    return [this.bosTokenId, ...this.contentTokens(prompt).ids, this.eosTokenId].slice(0, this.maxLength);
  }

  /**
   * Positions (start token = 0) of the tokens of word `wordIndex` of prompt.split(" "), each word tokenized
   * on its own (Tokens.word_token_indices). Positions past maxLength are returned as they are.
   */
  wordTokenIndices(prompt: string, wordIndex: number): number[] {
    const words = prompt.split(" ");
    if (!Number.isInteger(wordIndex) || wordIndex < 0 || wordIndex >= words.length) {
      throw new RangeError(`word index ${wordIndex} is outside the ${words.length} words of "${prompt}"`);
    }
    let position = 1;
    for (let i = 0; i < wordIndex; i++) position += this.contentTokens(words[i]).ids.length;
    const count = this.contentTokens(words[wordIndex]).ids.length;
    return Array.from({ length: count }, (_, k) => position + k);
  }

  /** Positions of the tokens of every occurrence of `word` among prompt.split(" ") (Tokens.word_indices). */
  wordIndices(prompt: string, word: string): number[] {
    return prompt.split(" ").flatMap((w, i) => (w === word ? this.wordTokenIndices(prompt, i) : []));
  }
}
