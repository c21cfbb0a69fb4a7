/**
 * The edit form: edited prompt, mode, injection fractions, reweight and local-blend words, and a brush to
 * paint a mask over the source (white = may change). Submitting posts one typed "edit" message.
 */
import "@vscode-elements/elements/dist/vscode-button/index.js";
import "@vscode-elements/elements/dist/vscode-label/index.js";
import "@vscode-elements/elements/dist/vscode-option/index.js";
import "@vscode-elements/elements/dist/vscode-single-select/index.js";
import "@vscode-elements/elements/dist/vscode-textfield/index.js";
import { EDIT_MODE_CHOICES, EDIT_NULL_CHOICES, EditModeChoice, EditNullChoice, EditRequest, PanelEdit } from "../src/shared/protocol";

type Field = HTMLElement & { value: string };

/** A form field: `input` (given the id) under its label. */
function labelled(label: string, id: string, input: Field): [HTMLElement, Field] {
  const wrap = document.createElement("div");
  wrap.className = "field";
  const l = document.createElement("vscode-label");
  l.setAttribute("for", id);
  l.textContent = label;
  input.id = id;
  wrap.append(l, input);
  return [wrap, input];
}

function field(label: string, id: string, value: string, attrs: Record<string, string> = {}): [HTMLElement, Field] {
  const input = document.createElement("vscode-textfield") as Field;
  input.value = value;
  for (const [k, v] of Object.entries(attrs)) input.setAttribute(k, v);
  return labelled(label, id, input);
}

/** A labelled single select of [value, text] options. */
function select(label: string, id: string, options: [string, string][]): [HTMLElement, Field] {
  const input = document.createElement("vscode-single-select") as Field & { label: string };
  input.label = label; // the accessible name of the select inside it
  for (const [value, text] of options) {
    const o = document.createElement("vscode-option");
    o.setAttribute("value", value);
    o.textContent = text;
    input.append(o);
  }
  return labelled(label, id, input);
}

const EDIT_NULL_TEXT: Record<EditNullChoice, string> = {
  default: "the method's default",
  empty: "the empty prompt's (keeps the rest best)",
  inverted: "the inversion's (the null-text paper's editing)",
};

export class EditForm {
  readonly element: HTMLElement;
  private readonly prompt: Field;
  private readonly mode: Field;
  private readonly cross: Field;
  private readonly self: Field;
  private readonly reweight: Field;
  private readonly blend: Field;
  private readonly blendThreshold: Field;
  private readonly editNull: Field;
  /** Keyboard brush position (in source pixels). */
  private cursor = { x: 0, y: 0 };
  private readonly brush: HTMLCanvasElement;
  private readonly error: HTMLElement;
  private readonly run: HTMLElement;
  /** The Prompt-to-Prompt controls (mode, steps, reweight, blend, mask): hidden for methods without them. */
  private readonly attentionControls: HTMLElement;
  private readonly clearMask: HTMLElement;
  private readonly regenerateNote: HTMLElement;
  private source: HTMLImageElement | null = null;
  private mask: Float32Array | null = null;
  private side = 0;
  private painting = false;

  constructor(private readonly submit: (request: EditRequest) => void) {
    this.element = document.createElement("form");
    this.element.className = "edit-form";
    const title = document.createElement("h2");
    title.textContent = "Edit with a prompt";
    let w: HTMLElement;
    [w, this.prompt] = field("Edited prompt", "edit-prompt", "", { placeholder: "the source prompt with words changed" });
    const fields = [w];
    [w, this.mode] = select(
      "Mode",
      "edit-mode",
      EDIT_MODE_CHOICES.map((m) => [m, m === "auto" ? "auto (from the words changed)" : m]),
    );
    fields.push(w);
    [w, this.cross] = field("Cross-attention steps (fraction)", "edit-cross", "0.8", { type: "number", min: "0", max: "1", step: "0.05" });
    fields.push(w);
    [w, this.self] = field("Self-attention steps (fraction)", "edit-self", "0.4", { type: "number", min: "0", max: "1", step: "0.05" });
    fields.push(w);
    [w, this.reweight] = field("Reweight (word=factor, ...; optional)", "edit-reweight", "", { placeholder: "none (e.g. red=3)" });
    fields.push(w);
    [w, this.blend] = field("Local blend words", "edit-blend", "", { placeholder: "the swapped words (none: no blend)" });
    fields.push(w);
    [w, this.blendThreshold] = field("Local blend threshold (0 to 1)", "edit-blend-threshold", "0.3", { type: "number", min: "0", max: "1", step: "0.05" });
    fields.push(w);
    [w, this.editNull] = select(
      "Null embedding of the edited image",
      "edit-null",
      EDIT_NULL_CHOICES.map((c) => [c, EDIT_NULL_TEXT[c]]),
    );
    fields.push(w);

    const brushTitle = document.createElement("vscode-label");
    brushTitle.textContent = "Mask (paint where the image may change; optional)";
    this.brush = document.createElement("canvas");
    this.brush.width = this.brush.height = 256;
    this.brush.className = "brush";
    this.brush.tabIndex = 0;
    this.brush.setAttribute("role", "img");
    this.brush.setAttribute(
      "aria-label",
      "mask brush over the source image: drag to paint, Alt-drag to erase; with the keyboard, arrow keys move the brush, Space paints, Delete erases",
    );
    this.brush.addEventListener("keydown", (e) => this.key(e));
    this.brush.addEventListener("focus", () => this.drawBrush());
    this.brush.addEventListener("blur", () => this.drawBrush());
    this.brush.addEventListener("pointerdown", (e) => {
      this.painting = true;
      this.brush.setPointerCapture(e.pointerId);
      this.paint(e, !e.altKey);
    });
    this.brush.addEventListener("pointermove", (e) => this.painting && this.paint(e, !e.altKey));
    this.brush.addEventListener("pointerup", () => (this.painting = false));
    const clear = (this.clearMask = document.createElement("vscode-button"));
    clear.setAttribute("secondary", "");
    clear.textContent = "Clear mask";
    clear.addEventListener("click", () => {
      this.mask = null;
      this.drawBrush();
    });
    this.run = document.createElement("vscode-button");
    this.run.id = "edit-run";
    this.run.textContent = "Run edit";
    this.run.addEventListener("click", () => this.send());
    this.error = document.createElement("div");
    this.error.className = "status error";
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    buttons.append(this.run, clear);
    this.attentionControls = document.createElement("div");
    this.attentionControls.className = "attention-controls";
    this.attentionControls.append(...fields.slice(1), brushTitle, this.brush);
    this.regenerateNote = document.createElement("div");
    this.regenerateNote.className = "status";
    this.regenerateNote.hidden = true;
    this.element.append(title, fields[0], this.attentionControls, this.regenerateNote, buttons, this.error);
    this.element.addEventListener("submit", (e) => e.preventDefault());
  }

  /** A new inversion: the form forgets the previous image's prompt, mask and error. */
  reset(prompt: string): void {
    this.prompt.value = prompt;
    this.reweight.value = "";
    this.blend.value = "";
    this.blendThreshold.value = "0.3";
    this.editNull.value = "default";
    this.mask = null;
    this.source = null;
    this.side = 0;
    this.error.textContent = "";
    this.drawBrush();
  }

  /** Shows or hides the attention-control fields: a method without Prompt-to-Prompt (EDICT) regenerates
   * the image with the edited prompt, and the fields would do nothing. `method` names it in the note. */
  setAttentionControl(on: boolean, method: string): void {
    this.attentionControls.hidden = !on;
    this.clearMask.hidden = !on;
    this.regenerateNote.hidden = on;
    this.regenerateNote.textContent = on
      ? ""
      : `${method} edits regenerate the image from its inversion with the edited prompt; attention control, blend and mask do not apply.`;
  }

  /** Fills the form with an earlier edit's parameters, to run it again or change it. */
  fill(edit: PanelEdit): void {
    this.prompt.value = edit.prompt;
    this.mode.value = EDIT_MODE_CHOICES.includes(edit.mode as EditModeChoice) ? edit.mode : "auto";
    this.cross.value = String(edit.cross);
    this.self.value = String(edit.self);
    this.reweight.value = edit.reweight;
    this.blend.value = edit.blend;
    this.blendThreshold.value = String(edit.blendThreshold);
    this.editNull.value = EDIT_NULL_CHOICES.includes(edit.editNull as EditNullChoice) ? edit.editNull : "default";
    this.prompt.focus();
  }

  setSource(uri: string, prompt: string): void {
    if (!this.prompt.value) this.prompt.value = prompt;
    const img = new Image();
    img.onload = () => {
      this.source = img;
      this.side = img.naturalWidth;
      this.mask = null;
      this.drawBrush();
    };
    img.src = uri;
  }

  setBusy(busy: boolean): void {
    this.run.toggleAttribute("disabled", busy);
  }

  showError(message: string): void {
    this.error.textContent = message;
  }

  private key(e: KeyboardEvent): void {
    if (!this.side) return;
    const step = Math.max(1, Math.round(this.side / 16));
    const moves: Record<string, [number, number]> = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) {
      this.cursor.x = Math.min(this.side - 1, Math.max(0, this.cursor.x + moves[e.key][0]));
      this.cursor.y = Math.min(this.side - 1, Math.max(0, this.cursor.y + moves[e.key][1]));
    } else if (e.key === " " || e.key === "Enter" || e.key === "Delete" || e.key === "Backspace") {
      this.paintAt(this.cursor.x + 0.5, this.cursor.y + 0.5, !(e.key === "Delete" || e.key === "Backspace"));
    } else return;
    e.preventDefault();
    this.drawBrush();
  }

  private paint(e: PointerEvent, on: boolean): void {
    if (!this.side) return;
    const rect = this.brush.getBoundingClientRect();
    this.paintAt(((e.clientX - rect.left) / rect.width) * this.side, ((e.clientY - rect.top) / rect.height) * this.side, on);
  }

  private paintAt(cx: number, cy: number, on: boolean): void {
    if (!this.side) return;
    this.mask ??= new Float32Array(this.side * this.side);
    const radius = Math.max(1, this.side / 16);
    for (let y = Math.floor(cy - radius); y <= Math.ceil(cy + radius); y++) {
      for (let x = Math.floor(cx - radius); x <= Math.ceil(cx + radius); x++) {
        if (x < 0 || y < 0 || x >= this.side || y >= this.side) continue;
        if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= radius * radius) this.mask[y * this.side + x] = on ? 1 : 0;
      }
    }
    this.drawBrush();
  }

  private drawBrush(): void {
    const ctx = this.brush.getContext("2d");
    if (!ctx) return;
    const size = this.brush.width;
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, size, size);
    if (this.source) ctx.drawImage(this.source, 0, 0, size, size);
    if (!this.side) return;
    const cell = size / this.side;
    if (document.activeElement === this.brush) {
      ctx.strokeStyle = "rgba(80, 160, 255, 0.9)";
      ctx.strokeRect(this.cursor.x * cell, this.cursor.y * cell, cell, cell);
    }
    if (!this.mask) return;
    ctx.fillStyle = "rgba(80, 160, 255, 0.55)";
    for (let y = 0; y < this.side; y++) for (let x = 0; x < this.side; x++) if (this.mask[y * this.side + x] > 0) ctx.fillRect(x * cell, y * cell, cell, cell);
  }

  private send(): void {
    const num = (f: Field, name: string) => {
      const v = Number(f.value);
      if (f.value.trim() === "" || !(v >= 0 && v <= 1)) throw new Error(`${name} must be a fraction from 0 to 1`);
      return v;
    };
    try {
      const prompt = this.prompt.value.trim();
      if (!prompt) throw new Error("the edited prompt is empty");
      const controlled = !this.attentionControls.hidden;
      const painted = controlled && this.mask && this.mask.some((v) => v > 0) ? { side: this.side, values: Array.from(this.mask) } : null;
      this.error.textContent = "";
      this.submit({
        prompt,
        mode: (this.mode.value || "auto") as EditModeChoice,
        cross: num(this.cross, "cross-attention steps"),
        self: num(this.self, "self-attention steps"),
        reweight: controlled ? this.reweight.value : "",
        blend: controlled ? this.blend.value : "",
        blendThreshold: num(this.blendThreshold, "local blend threshold"),
        editNull: controlled ? ((this.editNull.value || "default") as EditNullChoice) : "default",
        mask: painted,
      });
    } catch (error) {
      this.showError((error as Error).message);
    }
  }
}
