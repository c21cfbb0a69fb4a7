/**
 * Cross-attention viewer: the prompt's words as chips; hovering, focusing or clicking one overlays its map
 * on the image the prompt belongs to (a heat overlay, the map stretched from its minimum to its maximum,
 * with a colour scale below).
 */
import type { PanelAttention, PanelToken } from "../src/shared/protocol";

export class AttentionView {
  readonly element: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly words: HTMLElement;
  private readonly caption: HTMLElement;
  private readonly scale: HTMLElement;
  /** Whose attention is shown ("the source", an edit). */
  private owner = "";
  private image: HTMLImageElement | null = null;
  private attention: PanelAttention | null = null;
  private pinned: PanelToken | null = null;
  /** The token shown now (for tests and the caption). */
  shown: PanelToken | null = null;

  constructor() {
    this.element = document.createElement("section");
    this.element.className = "attention";
    const title = document.createElement("h2");
    title.textContent = "Cross-attention";
    this.words = document.createElement("div");
    this.words.className = "words";
    this.words.setAttribute("role", "group");
    this.words.setAttribute("aria-label", "words of the prompt");
    this.canvas = document.createElement("canvas");
    this.canvas.width = this.canvas.height = 256;
    this.canvas.className = "attention-canvas";
    this.canvas.setAttribute("role", "img");
    this.canvas.setAttribute("aria-label", "cross-attention map over the image");
    this.scale = document.createElement("div");
    this.scale.className = "scale";
    const bar = document.createElement("span");
    bar.className = "scale-bar";
    const low = document.createElement("span");
    low.textContent = "least attention";
    const high = document.createElement("span");
    high.textContent = "most";
    this.scale.append(low, bar, high);
    this.caption = document.createElement("div");
    this.caption.className = "status";
    this.caption.setAttribute("aria-live", "polite");
    this.caption.textContent = "Hover or click a word to see where it attends.";
    this.element.append(title, this.words, this.canvas, this.scale, this.caption);
  }

  setImage(uri: string): void {
    const img = new Image();
    img.onload = () => {
      this.image = img;
      this.draw(this.shown);
    };
    img.src = uri;
  }

  /** Nothing shown: no words, no map, no image. */
  clear(): void {
    this.attention = null;
    this.pinned = null;
    this.image = null;
    this.words.replaceChildren();
    this.draw(null);
  }

  setAttention(attention: PanelAttention, owner: string): void {
    this.attention = attention;
    this.owner = owner;
    this.pinned = null;
    this.words.replaceChildren(
      ...attention.tokens.map((t) => {
        const chip = document.createElement("button");
        chip.className = "word";
        chip.textContent = t.token;
        chip.dataset.position = String(t.position);
        chip.type = "button";
        chip.setAttribute("aria-pressed", "false");
        chip.addEventListener("mouseenter", () => this.draw(t));
        chip.addEventListener("mouseleave", () => this.draw(this.pinned));
        chip.addEventListener("focus", () => this.draw(t));
        chip.addEventListener("blur", () => this.draw(this.pinned));
        chip.addEventListener("click", () => {
          this.pinned = this.pinned === t ? null : t;
          for (const c of this.words.querySelectorAll(".word")) {
            const on = c === chip && this.pinned === t;
            c.classList.toggle("pinned", on);
            c.setAttribute("aria-pressed", String(on));
          }
          this.draw(this.pinned);
        });
        return chip;
      }),
    );
    this.draw(null);
  }

  private draw(token: PanelToken | null): void {
    this.shown = token;
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    const size = this.canvas.width;
    ctx.clearRect(0, 0, size, size);
    ctx.imageSmoothingEnabled = false;
    if (this.image) ctx.drawImage(this.image, 0, 0, size, size);
    if (!token || !this.attention) {
      this.caption.textContent = "Hover or click a word to see where it attends.";
      return;
    }
    const r = this.attention.resolution;
    const max = Math.max(...token.map);
    const min = Math.min(...token.map);
    const span = Math.max(max - min, 1e-12);
    const cell = size / r;
    for (let y = 0; y < r; y++) {
      for (let x = 0; x < r; x++) {
        const v = (token.map[y * r + x] - min) / span;
        ctx.fillStyle = `rgba(255, ${Math.round(80 + 120 * (1 - v))}, 0, ${(0.75 * v).toFixed(3)})`;
        ctx.fillRect(x * cell, y * cell, cell, cell);
      }
    }
    this.caption.textContent = `"${token.token}" (word ${token.position} of the prompt of ${this.owner}): where it attends, ${r}x${r}, averaged over steps, layers and heads; ${((100 * min) / Math.max(max, 1e-12)).toFixed(0)}% of its peak where it attends least`;
  }
}
