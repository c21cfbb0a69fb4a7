/**
 * The engine's public API, shared by the CLI, the extension's worker and the benchmarks: open a model
 * folder, invert an image with a prompt by one of four methods, reconstruct from a saved artifact.
 * Nothing here touches VS Code; everything is plain data, so it can run in a worker thread.
 */
import * as path from "node:path";
import { ARTIFACT_FORMAT, ARTIFACT_VERSION, ArtifactError, InversionArtifact, checkArtifactMatchesModel } from "./artifact";
import { editSample, resolveEdit } from "./edit";
import { loadImage, modelOutputToRgb, psnr } from "./image";
import { Run, RunOptions, ddimInversion, decodeLatents, encodeImage, encodePrompts, rowAt, sample } from "./inversion";
import { CORE_GRAPHS, GraphName } from "./manifest";
import { Model, OpenModelOptions } from "./model";
import { METHOD_IMPLEMENTATIONS } from "./methods";
import { EditSpec, ResolvedEdit, controlTensors } from "./promptToPrompt";
import {
  METHOD_INFO,
  NULL_TEXT_SCHEDULES,
  SCHEDULE_NAMES,
  checkInversionSettings,
  type InversionMethod,
  type InversionSettings,
  type ScheduleName,
} from "./settings";

export class SettingsError extends Error {
  override name = "SettingsError";
}

export class PromptError extends Error {
  override name = "PromptError";
}

// The schedules and the settings' vocabulary live in ./settings (re-exported for the engine's callers).
export { NULL_TEXT_SCHEDULES, SCHEDULE_NAMES, type ScheduleName } from "./settings";

export interface InvertRequest {
  imagePath: string;
  prompt: string;
  /** The null-text schedule the settings start from (default "paper"). */
  schedule?: ScheduleName;
  settings?: Partial<InversionSettings>;
  /** Also reconstruct with plain DDIM (for the PSNR comparison); default true. */
  compareWithDdim?: boolean;
}

export interface InversionResult {
  artifact: InversionArtifact;
  /** RGB uint8, model size. */
  reconstruction: Uint8Array;
  ddimReconstruction: Uint8Array | null;
  psnr: number;
  ddimPsnr: number | null;
  /** What was done to the image or prompt that the user should know. */
  notes: string[];
}

export interface EditResult {
  edit: ResolvedEdit;
  /** RGB uint8 at model size, one per prompt: [source branch, edits...]. */
  images: Uint8Array[];
  /** Cross-attention maps averaged over steps, layers and heads: [K, r, r, T]. */
  maps: Float32Array;
  mapResolution: number;
  /** Each prompt's tokens (start and end tokens included), for labelling the maps. */
  tokens: string[][];
  /** The last local-blend mask [K, h, w] at latent size, or null. */
  mask: Float32Array | null;
  /** Final latents [K, C, h, w]. */
  latents: Float32Array;
  /** The source branch against the artifact's preprocessed source, dB. */
  sourcePsnr: number;
  /** The artifact's preprocessed source (RGB uint8, model size): what an edit's change is measured against. */
  source: Uint8Array;
  /** Whether a user mask took part. */
  userMask: boolean;
  unetForward: number;
  seconds: number;
  notes: string[];
}

export class Engine {
  private constructor(readonly model: Model) {}

  static async open(modelDir: string, options: OpenModelOptions = {}): Promise<Engine> {
    return new Engine(await Model.open(modelDir, options));
  }

  defaultSettings(schedule: ScheduleName = "paper"): InversionSettings {
    const d = this.model.manifest.defaults;
    if (!SCHEDULE_NAMES.includes(schedule)) throw new SettingsError(`schedule must be one of ${SCHEDULE_NAMES.join(", ")}, got ${schedule}`);
    return {
      method: "nulltext",
      steps: d.inference_steps,
      guidance: d.guidance_scale,
      pairing: "consistent",
      ...NULL_TEXT_SCHEDULES[schedule],
      // the model's own default, where it differs from the paper's 10
      innerSteps: schedule === "paper" ? d.inner_steps : NULL_TEXT_SCHEDULES[schedule].innerSteps,
    };
  }

  resolveSettings(partial: Partial<InversionSettings> = {}, schedule: ScheduleName = "paper"): InversionSettings {
    const fail = (msg: string): never => {
      throw new SettingsError(msg);
    };
    const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
    const s = { ...this.defaultSettings(schedule), ...defined };
    return checkInversionSettings(s, fail, this.model.manifest.scheduler.num_train_timesteps);
  }

  /** Checks a prompt against the model's tokenizer; returns notes (truncation) or throws a PromptError. */
  checkPrompt(prompt: string): string[] {
    if (prompt.trim().length === 0) throw new PromptError('the prompt is empty: describe the image, e.g. "a red circle on a white background"');
    const encoded = this.model.tokenizer.encode(prompt);
    if (encoded.unknownWords.length) {
      const known = this.model.tokenizer.knownWords();
      throw new PromptError(
        `model "${this.model.id}" does not know the word${encoded.unknownWords.length > 1 ? "s" : ""} ${encoded.unknownWords.map((w: string) => `"${w}"`).join(", ")} (its vocabulary is word-level${known ? `; it knows: ${known.join(", ")}` : ""})`,
      );
    }
    if (encoded.truncated) {
      const max = this.model.manifest.tokenizer.max_length;
      return [`the prompt is longer than ${max} tokens: only its first ${max - 2} tokens are used`];
    }
    return [];
  }

  /** Creates the sessions a method needs now, so a first run does not pay for them midway. */
  async prepare(method: InversionMethod = "nulltext"): Promise<void> {
    const graphs: GraphName[] = [...CORE_GRAPHS, ...METHOD_INFO[method].extraGraphs];
    await Promise.all(graphs.map((g) => this.model.graph(g)));
  }

  async invert(request: InvertRequest, options: RunOptions = {}): Promise<InversionResult> {
    const started = performance.now();
    const settings = this.resolveSettings(request.settings, request.schedule);
    const notes = [...this.model.notes, ...this.checkPrompt(request.prompt)];
    const m = this.model.manifest;
    for (const graph of METHOD_INFO[settings.method].extraGraphs) await this.model.graph(graph); // fail early if one is missing
    const image = await loadImage(request.imagePath, m.image_size, options.signal);
    notes.push(...image.notes);
    const run = new Run(this.model, this.model.scheduler(settings.steps), options);
    run.progress({ phase: "encode", step: 0, total: 1 });
    const [cond, uncond] = splitRows(await encodePrompts(run, [request.prompt, ""]), 2);
    const z0 = await encodeImage(run, image.rgb);
    run.progress({ phase: "encode", step: 1, total: 1 });
    const info = METHOD_INFO[settings.method];
    const pivots = info.pivots ? await ddimInversion(run, z0, cond, settings.pairing) : [z0];
    const out = await METHOD_IMPLEMENTATIONS[settings.method].invert({ run, pivots, cond, uncond, settings });
    const zT = out.zT ?? pivots[pivots.length - 1];
    const nullEmbeddings = stack(out.nullEmbeddings);
    const offsets = out.offsets;
    const records = out.records;
    const reconstructed = out.reconstruction;
    const rowLength = this.model.embeddingLength;
    const latents = [reconstructed ?? (await sample(run, zT, cond, (i) => rowAt(nullEmbeddings, rowLength, i), settings.guidance, offsets))];
    // DDIM only, from the last pivot: for the methods that start from the pivots (and are not DDIM itself)
    const compare = (request.compareWithDdim ?? true) && info.pivots && settings.method !== "ddim";
    if (compare) latents.push(await sample(run, pivots[pivots.length - 1], cond, () => uncond, settings.guidance, undefined, "compare"));
    run.progress({ phase: "decode", step: 0, total: 1 });
    const images = await decodeLatents(run, stack(latents), latents.length);
    run.progress({ phase: "decode", step: 1, total: 1 });
    const reconstruction = modelOutputToRgb(images, m.image_size, 0);
    const ddimReconstruction = compare ? modelOutputToRgb(images, m.image_size, 1) : null;
    const recPsnr = psnr(reconstruction, image.rgb);
    const ddimPsnr = compare ? psnr(ddimReconstruction!, image.rgb) : settings.method === "ddim" ? recPsnr : null;
    const artifact: InversionArtifact = {
      header: {
        format: ARTIFACT_FORMAT,
        version: ARTIFACT_VERSION,
        created: new Date().toISOString(),
        prompt: request.prompt,
        settings,
        model: { id: this.model.id, manifestSha256: this.model.manifestSha256, dir: this.model.dir },
        source: { path: path.resolve(request.imagePath), sha256: image.sha256, width: image.width, height: image.height },
        steps: records,
        stats: {
          unetForward: run.unetForward,
          unetBackward: run.unetBackward,
          seconds: (performance.now() - started) / 1000,
          psnr: finiteOrNull(recPsnr),
          ddimPsnr: ddimPsnr === null ? null : finiteOrNull(ddimPsnr),
        },
        notes,
      },
      zT,
      nullEmbeddings,
      directOffsets: offsets ? stack(offsets) : null,
      coupledLatent: out.coupledLatent ?? null,
      source: image.rgb,
      dims: { latent: this.model.latentDims, tokens: m.tokenizer.max_length, hidden: m.text_hidden_size, imageSize: m.image_size },
    };
    return { artifact, reconstruction, ddimReconstruction, psnr: recPsnr, ddimPsnr, notes };
  }

  /** Regenerates the image an artifact describes (its prompt, null embeddings and offsets). */
  async reconstruct(artifact: InversionArtifact, options: RunOptions = {}): Promise<{ image: Uint8Array; psnr: number }> {
    this.checkArtifact(artifact);
    const s = artifact.header.settings;
    const run = new Run(this.model, this.model.scheduler(s.steps), options);
    const [cond] = splitRows(await encodePrompts(run, [artifact.header.prompt]), 1);
    const [latent] = await this.generate(run, artifact, cond);
    const image = modelOutputToRgb(await decodeLatents(run, latent), this.model.manifest.image_size);
    return { image, psnr: psnr(image, artifact.source) };
  }

  /**
   * The artifact's generation for each prompt's conditioning (stacked): the method's own sampler where it
   * has one (EDICT), else guided DDIM with the stored null embeddings (and Direct Inversion's offsets).
   */
  private async generate(run: Run, artifact: InversionArtifact, conds: Float32Array): Promise<Float32Array[]> {
    const s = artifact.header.settings;
    const rowLength = this.model.embeddingLength;
    const nulls = (i: number) => rowAt(artifact.nullEmbeddings, rowLength, i);
    const own = METHOD_IMPLEMENTATIONS[s.method].sample;
    if (own) return own({ run, zT: artifact.zT, coupledLatent: artifact.coupledLatent ?? null, conds, uncond: nulls(0), guidance: s.guidance });
    const offsets = this.stepOffsets(artifact);
    const latents: Float32Array[] = [];
    for (const cond of splitRows(conds, conds.length / rowLength)) latents.push(await sample(run, artifact.zT, cond, nulls, s.guidance, offsets));
    return latents;
  }

  /** Prompt-to-Prompt edit of an inversion: [source, ...edited prompts] through the control UNet. */
  async edit(artifact: InversionArtifact, spec: EditSpec, options: RunOptions = {}): Promise<EditResult> {
    if (!METHOD_INFO[artifact.header.settings.method].promptToPrompt) return this.generatedEdit(artifact, spec, options);
    const editNull = METHOD_INFO[artifact.header.settings.method].editNull;
    return this.controlled(artifact, resolveEdit(artifact.header.prompt, spec, editNull), spec, options);
  }

  /**
   * An edit of a method that has its own sampler and no attention control (EDICT): each prompt generated
   * from the stored latents, as the method's paper edits. No attention maps, no blend mask.
   */
  private generatedEdit(artifact: InversionArtifact, spec: EditSpec, options: RunOptions): Promise<EditResult> {
    const edit = resolveEdit(artifact.header.prompt, spec);
    const label = METHOD_INFO[artifact.header.settings.method].label;
    const note = `${label} edits generate with the edited prompt from the stored latents (the method's own editing): Prompt-to-Prompt's attention control, blend words and masks do not apply`;
    const m = this.model.manifest;
    const mapLength = edit.prompts.length * m.attention.map_resolution ** 2 * m.tokenizer.max_length;
    return this.editResult(artifact, edit, options, { notes: [note], userMask: false }, async (run, conds) => ({
      latents: stack(await this.generate(run, artifact, conds)),
      maps: new Float32Array(mapLength),
      mask: null,
    }));
  }

  /** The source prompt's cross-attention maps while reconstructing (no edit branch). */
  async attention(artifact: InversionArtifact, options: RunOptions = {}): Promise<EditResult> {
    const info = METHOD_INFO[artifact.header.settings.method];
    if (!info.promptToPrompt) throw new SettingsError(`${info.label} inversions have no cross-attention maps: they are generated without the control UNet`);
    const alone = { ...resolveEdit(artifact.header.prompt, { prompts: [artifact.header.prompt] }), prompts: [artifact.header.prompt] };
    return this.controlled(artifact, alone, { prompts: [] }, options);
  }

  private controlled(artifact: InversionArtifact, edit: ResolvedEdit, spec: EditSpec, options: RunOptions): Promise<EditResult> {
    const m = this.model.manifest;
    const s = artifact.header.settings;
    const rowLength = this.model.embeddingLength;
    const inverted = (i: number) => rowAt(artifact.nullEmbeddings, rowLength, i);
    return this.editResult(artifact, edit, options, { notes: [], userMask: spec.userMask !== undefined }, async (run, conds, empty) => {
      // after the artifact and the prompts are checked: their errors name the file and the words
      const control = controlTensors(this.model.tokenizer, edit);
      if (spec.userMask && spec.userMask.length !== m.latent_size * m.latent_size) {
        throw new SettingsError(`the mask has ${spec.userMask.length} values, expected ${m.latent_size}x${m.latent_size}`);
      }
      const nullAt = (i: number, branch: number) => (branch > 0 && empty ? empty : inverted(i));
      return editSample(run, edit, control, artifact.zT, conds, nullAt, s.guidance, this.stepOffsets(artifact), spec.userMask ?? null);
    });
  }

  /**
   * What every edit shares around its sampler: the artifact and prompts checked, the prompts encoded, the
   * final latents decoded, the result assembled. `sampleEdit` turns the prompts' conditioning into the
   * final latents [K, C, h, w], the attention maps [K, r, r, T] and the blend mask.
   */
  private async editResult(
    artifact: InversionArtifact,
    edit: ResolvedEdit,
    options: RunOptions,
    extra: { notes: string[]; userMask: boolean },
    /** `empty`: the empty prompt's conditioning when the edit's branches take it as their null, else null. */
    sampleEdit: (
      run: Run,
      conds: Float32Array,
      empty: Float32Array | null,
    ) => Promise<{ latents: Float32Array; maps: Float32Array; mask: Float32Array | null }>,
  ): Promise<EditResult> {
    const started = performance.now();
    this.checkArtifact(artifact);
    const notes = [...this.model.notes, ...edit.prompts.slice(1).flatMap((p) => this.checkPrompt(p)), ...extra.notes];
    const m = this.model.manifest;
    const run = new Run(this.model, this.model.scheduler(artifact.header.settings.steps), options);
    // the empty prompt in the same text-encoder call: at SD size its session closes after each use
    const withEmpty = edit.editNull === "empty";
    const encoded = await encodePrompts(run, withEmpty ? [...edit.prompts, ""] : edit.prompts);
    const rows = edit.prompts.length * this.model.embeddingLength;
    const result = await sampleEdit(run, encoded.subarray(0, rows), withEmpty ? encoded.subarray(rows) : null);
    const k = edit.prompts.length;
    const decoded = await decodeLatents(run, result.latents, k);
    const images = Array.from({ length: k }, (_, b) => modelOutputToRgb(decoded, m.image_size, b));
    return {
      edit,
      images,
      maps: result.maps,
      mapResolution: m.attention.map_resolution,
      tokens: edit.prompts.map((p) => this.model.tokenizer.encode(p).tokens),
      mask: result.mask,
      latents: result.latents,
      sourcePsnr: psnr(images[0], artifact.source),
      source: artifact.source,
      userMask: extra.userMask,
      unetForward: run.unetForward,
      seconds: (performance.now() - started) / 1000,
      notes,
    };
  }

  /** The artifact was made with this model, and its header is one this model can run (its prompt's words known). */
  private checkArtifact(artifact: InversionArtifact): void {
    checkArtifactMatchesModel(artifact, this.model);
    try {
      this.checkPrompt(artifact.header.prompt);
    } catch (error) {
      throw new ArtifactError(`${artifact.file ?? "the artifact"}: its prompt cannot be used: ${(error as Error).message}`);
    }
  }

  /** Direct Inversion's stored offsets as one latent per step (undefined for the other methods). */
  private stepOffsets(artifact: InversionArtifact): Float32Array[] | undefined {
    const all = artifact.directOffsets;
    if (!all) return undefined;
    const n = this.model.latentLength;
    return Array.from({ length: artifact.header.settings.steps }, (_, i) => all.subarray(i * n, (i + 1) * n));
  }

  async close(): Promise<void> {
    await this.model.release();
  }
}

function splitRows(data: Float32Array, rows: number): Float32Array[] {
  const n = data.length / rows;
  return Array.from({ length: rows }, (_, i) => data.slice(i * n, (i + 1) * n));
}

function stack(rows: Float32Array[]): Float32Array {
  const n = rows[0]?.length ?? 0;
  const out = new Float32Array(n * rows.length);
  rows.forEach((r, i) => out.set(r, i * n));
  return out;
}

function finiteOrNull(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}
