/**
 * Image in and out with sharp: the source is oriented by its EXIF tag, alpha flattened onto white,
 * centre-cropped to a square and resized to the model size (bicubic, as the reference does with PIL).
 */
import { createHash } from "node:crypto";
import sharp, { type Metadata } from "sharp";
import { FileReadError, MAX_BYTES, readRegularFile, writeFileAtomic } from "./files";

export class ImageError extends Error {
  override name = "ImageError";
}

/** sharp refuses images above this many pixels before decoding them (a 30000x30000 header stays cheap). */
const MAX_INPUT_PIXELS = 100_000_000;

export interface LoadedImage {
  /** RGB, HWC, uint8, size x size. */
  rgb: Uint8Array;
  size: number;
  /** Size of the original after EXIF orientation. */
  width: number;
  height: number;
  /** sha256 of the source file's bytes. */
  sha256: string;
  /** Things done to the image the user may want to know (alpha flattened, first frame of an animation...). */
  notes: string[];
}

/** Formats decoded as pixels. Vector and document inputs (SVG, PDF) and ImageMagick's catch-all are not
 * images of the scene: an 18 KB SVG can ask for minutes of rendering, so they are refused by content. */
const RASTER_FORMATS = new Set(["png", "jpeg", "webp", "gif", "tiff", "heif", "avif", "jp2", "jxl"]);

/** What the first bytes say the file is: a raster format, or a description of what it is instead. */
function sniffFormat(bytes: Uint8Array): { raster: true } | { raster: false; looksLike: string } {
  const ascii = (from: number, to: number) => String.fromCharCode(...bytes.subarray(from, to));
  const starts = (...b: number[]) => b.every((v, i) => bytes[i] === v);
  if (starts(0x89, 0x50, 0x4e, 0x47) || starts(0xff, 0xd8, 0xff) || ascii(0, 4) === "GIF8") return { raster: true };
  if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return { raster: true };
  if (starts(0x49, 0x49, 0x2a, 0x00) || starts(0x4d, 0x4d, 0x00, 0x2a)) return { raster: true };
  if (ascii(4, 8) === "ftyp") return { raster: true }; // HEIF, AVIF
  if (starts(0, 0, 0, 0x0c) && (ascii(4, 8) === "jP  " || ascii(4, 8) === "JXL ")) return { raster: true };
  if (starts(0xff, 0x0a)) return { raster: true }; // JPEG XL codestream
  const head = ascii(0, Math.min(bytes.length, 256))
    .replace(/^\uFEFF/, "")
    .trimStart();
  if (head.startsWith("%PDF")) return { raster: false, looksLike: "a PDF document" };
  if (/^<(\?xml|svg|!DOCTYPE svg)/i.test(head) || /<svg[\s>]/i.test(head)) return { raster: false, looksLike: "an SVG drawing" };
  if (head.startsWith("<")) return { raster: false, looksLike: "XML or HTML" };
  return { raster: false, looksLike: "" };
}

/** Reads an image or mask file: a regular file, at most MAX_BYTES.image, of a raster format. */
async function readRaster(file: string, what: string, signal?: AbortSignal): Promise<Buffer> {
  const bytes = await readRegularFile(file, MAX_BYTES.image, signal).catch((error: unknown) => {
    if (error instanceof FileReadError)
      throw new ImageError(`${file}: ${error.code === "ENOTREG" || error.code === "ETOOBIG" ? `${what} ${error.message}` : error.message}`);
    throw error;
  });
  if (bytes.length === 0) throw new ImageError(`${file}: the file is empty`);
  const format = sniffFormat(bytes);
  if (!format.raster) {
    throw new ImageError(
      format.looksLike
        ? `${file}: ${format.looksLike}, not a raster image: ${what} must be PNG, JPEG, WebP, GIF, TIFF, AVIF/HEIF or JPEG 2000/XL (convert it first)`
        : `${file}: not an image: ${what} must be PNG, JPEG, WebP, GIF, TIFF, AVIF/HEIF or JPEG 2000/XL`,
    );
  }
  return bytes;
}

export async function loadImage(file: string, size: number, signal?: AbortSignal): Promise<LoadedImage> {
  const bytes = await readRaster(file, "the image", signal);
  const notes: string[] = [];
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS }).metadata();
    if (!RASTER_FORMATS.has(meta.format ?? "")) throw new ImageError(`${file}: ${meta.format} input is not accepted; use a raster image (PNG, JPEG, WebP...)`);
  } catch (error) {
    if (error instanceof ImageError) throw error;
    const message = sharpMessage(error);
    if (/exceeds pixel limit/i.test(message))
      throw new ImageError(`${file}: larger than the ${MAX_INPUT_PIXELS / 1e6} megapixels accepted; scale it down first`);
    if (/premature end|truncat|corrupt/i.test(message)) throw new ImageError(`${file}: the image is damaged or truncated (${message})`);
    throw new ImageError(`${file}: not an image sharp can read (${message})`);
  }
  if (!meta.width || !meta.height) throw new ImageError(`${file}: the image has no size`);
  if (meta.width * meta.height > MAX_INPUT_PIXELS) {
    throw new ImageError(`${file}: ${meta.width}x${meta.height} is larger than the ${MAX_INPUT_PIXELS / 1e6} megapixels accepted`);
  }
  if ((meta.pages ?? 1) > 1) notes.push(`${meta.pages} frames: the first one is used`);
  if (meta.hasAlpha) notes.push("transparency flattened onto white");
  if (meta.orientation && meta.orientation !== 1) notes.push(`EXIF orientation ${meta.orientation} applied`);
  if (meta.space === "cmyk") notes.push("CMYK converted to sRGB");
  if (meta.depth && !["uchar", "char"].includes(meta.depth)) notes.push(`${meta.depth} samples reduced to 8 bits`);
  try {
    const oriented = await sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS, pages: 1 })
      .rotate()
      .flatten({ background: "#ffffff" })
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    const { width, height, channels } = oriented.info;
    const side = Math.min(width, height);
    const square = sharp(oriented.data, { raw: { width, height, channels } }).extract({
      left: Math.floor((width - side) / 2),
      top: Math.floor((height - side) / 2),
      width: side,
      height: side,
    });
    const resized = await square
      .resize(size, size, { kernel: "cubic", fit: "fill" })
      .removeAlpha()
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    let rgb: Uint8Array = new Uint8Array(resized.data.buffer, resized.data.byteOffset, resized.data.length);
    if (resized.info.channels === 1) rgb = grayToRgb(rgb);
    else if (resized.info.channels !== 3) throw new ImageError(`${file}: decoded to ${resized.info.channels} channels, expected 3`);
    const crop = width !== height ? `centre-cropped to ${side}x${side}` : "";
    const resize = side !== size ? `resized to ${size}x${size}` : "";
    if (crop || resize) notes.unshift(`${width}x${height} ${[crop, resize].filter(Boolean).join(" and ")}`);
    return { rgb: Uint8Array.from(rgb), size, width, height, sha256: createHash("sha256").update(bytes).digest("hex"), notes };
  } catch (error) {
    if (error instanceof ImageError) throw error;
    throw new ImageError(`${file}: cannot decode it; the image is damaged or truncated (${sharpMessage(error)})`);
  }
}

function grayToRgb(gray: Uint8Array): Uint8Array {
  const out = new Uint8Array(gray.length * 3);
  for (let i = 0; i < gray.length; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = gray[i];
  return out;
}

function sharpMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text
    .split("\n")[0]
    .replace(/^Input (buffer|file) /, "")
    .trim();
}

/** uint8 HWC RGB -> float NCHW in [-1, 1], the VAE encoder's input. */
export function rgbToModelInput(rgb: Uint8Array, size: number): Float32Array {
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = rgb[3 * p + c] / 127.5 - 1;
  }
  return out;
}

/** float NCHW in [-1, 1] (first image of the batch) -> uint8 HWC RGB, rounded like the reference. */
export function modelOutputToRgb(image: Float32Array, size: number, index = 0): Uint8Array {
  const plane = size * size;
  const base = index * 3 * plane;
  const out = new Uint8Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const x = Math.min(1, Math.max(-1, image[base + c * plane + p]));
      out[3 * p + c] = Math.round(Math.fround((x + 1) * 127.5));
    }
  }
  return out;
}

export async function encodePng(rgb: Uint8Array, width: number, height = width): Promise<Buffer> {
  return sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.length), { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

/** Writes an RGB image as PNG, atomically. */
export async function savePng(file: string, rgb: Uint8Array, width: number, height = width): Promise<void> {
  await writeFileAtomic(file, await encodePng(rgb, width, height));
}

/** PSNR in dB of two uint8 images of the same size (Infinity when equal). */
export function psnr(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) throw new Error(`psnr: sizes differ (${a.length} vs ${b.length})`);
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    sum += d * d;
  }
  const mse = sum / a.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

/**
 * A mask image (white = may change) cropped like the source and averaged down to `size` x `size` (the
 * latent size), values in [0, 1]. Alpha, when present, is the mask (a painted stroke on transparency).
 */
export async function loadMask(file: string, size: number, signal?: AbortSignal): Promise<Float32Array> {
  const bytes = await readRaster(file, "the mask", signal);
  try {
    const meta = await sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS }).metadata();
    if (!RASTER_FORMATS.has(meta.format ?? "")) throw new Error(`${meta.format} input is not accepted`);
    let img = sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS, pages: 1 }).rotate();
    img = meta.hasAlpha ? img.ensureAlpha().extractChannel("alpha") : img.greyscale();
    const { data, info } = await img.raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
    const side = Math.min(info.width, info.height);
    const small = await sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } })
      .extract({ left: Math.floor((info.width - side) / 2), top: Math.floor((info.height - side) / 2), width: side, height: side })
      .resize(size, size, { kernel: "linear", fit: "fill" })
      .extractChannel(0)
      .raw({ depth: "uchar" })
      .toBuffer();
    return Float32Array.from(small, (v) => v / 255);
  } catch (error) {
    throw new ImageError(`${file}: not a mask image sharp can read (${sharpMessage(error)})`);
  }
}

/** One attention map [r*r] as a greyscale PNG at `size` px, normalised to its maximum. */
export async function attentionMapPng(map: Float32Array, r: number, size: number): Promise<Buffer> {
  let max = 0;
  for (const v of map) max = Math.max(max, v);
  const grey = Uint8Array.from(map, (v) => (max > 0 ? Math.round((255 * v) / max) : 0));
  return sharp(Buffer.from(grey), { raw: { width: r, height: r, channels: 1 } })
    .resize(size, size, { kernel: "nearest" })
    .png()
    .toBuffer();
}

/** A mask painted over the model-size source (side x side values in [0, 1]) averaged down to the latent size. */
export function maskFromPainting(values: ArrayLike<number>, side: number, latentSize: number): Float32Array {
  if (!Number.isInteger(side) || side < latentSize || side % latentSize !== 0 || values.length !== side * side) {
    throw new ImageError(`a painted mask must be ${latentSize}k x ${latentSize}k values, got ${values.length} for side ${side}`);
  }
  const f = side / latentSize;
  const out = new Float32Array(latentSize * latentSize);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const v = Number(values[y * side + x]);
      out[Math.floor(y / f) * latentSize + Math.floor(x / f)] += Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
    }
  }
  return out.map((v) => v / (f * f));
}
