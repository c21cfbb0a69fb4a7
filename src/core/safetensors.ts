/**
 * The safetensors container (8-byte little-endian header length, JSON header, raw little-endian data),
 * which Python reads with `safetensors.safe_open`. The reader checks every offset and size, so a
 * truncated or tampered file is rejected with a clear message instead of read out of bounds.
 */

type DType = "F32" | "U8" | "I64";

export interface StoredTensor {
  dtype: DType;
  shape: number[];
  data: Float32Array | Uint8Array | BigInt64Array;
}

const BYTES: Record<DType, number> = { F32: 4, U8: 1, I64: 8 };
/** Headers above this are refused: ours are a few KB, a bigger one is damage or an attack. */
const MAX_HEADER_BYTES = 16 * 1024 * 1024;

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

export function encodeSafetensors(tensors: Record<string, StoredTensor>, metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new Error(`tensor ${name}: shape [${t.shape}] holds ${count} values, data has ${t.data.length}`);
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // aligned data, as the Python writer does
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function decodeSafetensors(file: Uint8Array): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  const fail = (msg: string): never => {
    throw new SafetensorsError(msg);
  };
  if (file.length < 8) fail(`file is ${file.length} bytes, too short for a header`);
  const headerLength = new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(Math.min(MAX_HEADER_BYTES, file.length - 8)))
    fail(`header length ${headerLength} does not fit the file (${file.length} bytes): truncated or not an artifact`);
  const headerEnd = 8 + Number(headerLength);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(file.subarray(8, headerEnd)));
  } catch {
    fail("header is not valid UTF-8 JSON");
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("header is not a JSON object");
  const dataLength = file.length - headerEnd;
  const tensors: Record<string, StoredTensor> = {};
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry) || Object.values(entry).some((v) => typeof v !== "string")) {
        fail("__metadata__ must map strings to strings");
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    if (typeof entry !== "object" || entry === null) fail(`tensor ${name}: entry is not an object`);
    const { dtype, shape, data_offsets } = entry as Record<string, unknown>;
    if (dtype !== "F32" && dtype !== "U8" && dtype !== "I64") fail(`tensor ${name}: dtype ${JSON.stringify(dtype)} is not F32, U8 or I64`);
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor ${name}: bad shape`);
    if (!Array.isArray(data_offsets) || data_offsets.length !== 2 || !data_offsets.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor ${name}: bad data_offsets`);
    }
    const [begin, end] = data_offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const width = BYTES[dtype as DType];
    if (!(begin <= end) || end > dataLength) fail(`tensor ${name}: data [${begin}, ${end}) lies outside the ${dataLength} data bytes: truncated file`);
    if (end - begin !== count * width) fail(`tensor ${name}: ${end - begin} bytes for shape [${shape}] of ${dtype}`);
    spans.push([begin, end, name]);
    const bytes = file.slice(headerEnd + begin, headerEnd + end); // a copy: aligned, and independent of the file buffer
    const data = dtype === "F32" ? new Float32Array(bytes.buffer) : dtype === "I64" ? new BigInt64Array(bytes.buffer) : bytes;
    tensors[name] = { dtype: dtype as DType, shape: shape as number[], data };
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) if (spans[i][0] < spans[i - 1][1]) fail(`tensors ${spans[i - 1][2]} and ${spans[i][2]} overlap`);
  return { tensors, metadata };
}
