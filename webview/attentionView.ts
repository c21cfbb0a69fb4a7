/**
 * Cross-attention viewer: the prompt's words as chips; hovering or clicking one overlays its map on the
 * source image (a heat overlay on a canvas, the map normalised to its maximum).
 */
import type { PanelAttention, PanelToken } from "../src/shared/protocol";

export class AttentionView {
  readonly element: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly words: HTMLElement;
  private readonly caption: HTMLElement;
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
    this.canvas = document.createElement("canvas");
    this.canvas.width = this.canvas.height = 256;
    this.canvas.className = "attention-canvas";
    this.caption = document.createElement("div");
    this.caption.className = "status";
    this.caption.textContent = "Hover or click a word to see where it attends.";
    this.element.append(title, this.words, this.canvas, this.caption);
  }

  setImage(uri: string): void {
    const img = new Image();
    img.onload = () => {
      this.image = img;
      this.draw(this.shown);
    };
    img.src = uri;
  }

  setAttention(attention: PanelAttention): void {
    this.attention = attention;
    this.pinned = null;
    this.words.replaceChildren(
      ...attention.tokens.map((t) => {
        const chip = document.createElement("button");
        chip.className = "word";
        chip.textContent = t.token;
        chip.dataset.position = String(t.position);
        chip.addEventListener("mouseenter", () => this.draw(t));
        chip.addEventListener("mouseleave", () => this.draw(this.pinned));
        chip.addEventListener("click", () => {
          this.pinned = this.pinned === t ? null : t;
          for (const c of this.words.querySelectorAll(".word")) c.classList.toggle("pinned", c === chip && this.pinned === t);
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
    const max = Math.max(...token.map, 1e-12);
    const cell = size / r;
    for (let y = 0; y < r; y++) {
      for (let x = 0; x < r; x++) {
        const v = token.map[y * r + x] / max;
        ctx.fillStyle = `rgba(255, ${Math.round(80 + 120 * (1 - v))}, 0, ${(0.75 * v).toFixed(3)})`;
        ctx.fillRect(x * cell, y * cell, cell, cell);
      }
    }
    this.caption.textContent = `"${token.token}" (token ${token.position}): its cross-attention, ${r}x${r}, averaged over steps, layers and heads`;
  }
}
