/**
 * Execution providers: what "auto" picks, clear errors for providers this machine lacks, `nti doctor`, and
 * WebGPU against the CPU on real inputs. WebGPU runs here on a software Vulkan adapter (SwiftShader, shipped
 * with Debian's chromium): the same runtime code path a GPU takes, far slower. Where no adapter can be made
 * the WebGPU tests are skipped with the reason.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { autoProviders, runtimeInfo } from "../../src/core/backend";
import { ROOT, SHAPES_MODEL } from "./helpers/fixtures";

const dir = mkdtempSync(path.join(tmpdir(), "nti-providers-"));
const SAMPLE = path.join(ROOT, "media/samples/two-shapes.png");
const PROMPT = "a blue circle and a green square on a gray background";
/** Largest |WebGPU - CPU| of an output, relative to the output's largest magnitude (measured: <= 1.9e-4). */
const WEBGPU_RELATIVE_TOLERANCE = 1e-3;

/** Chromium's SwiftShader Vulkan driver and the Vulkan loader beside it, as environment for a child process. */
function swiftShaderEnv(): NodeJS.ProcessEnv | null {
  const icd = process.env.NTI_VK_ICD ?? "/usr/lib/chromium/vk_swiftshader_icd.json";
  if (!existsSync(icd)) return null;
  const libDir = path.dirname(icd);
  return { ...process.env, VK_ICD_FILENAMES: icd, LD_LIBRARY_PATH: [libDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":") };
}

function nti(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "src/cli/nti.ts"), ...args], { cwd: ROOT, encoding: "utf8", env });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const webgpu = (() => {
  const env = swiftShaderEnv();
  if (!runtimeInfo().providers.some((p) => p.name === "webgpu")) return { env: null, skip: "this ONNX Runtime build has no WebGPU provider" };
  if (!env) return { env: null, skip: "no software Vulkan driver (Debian's chromium ships SwiftShader; NTI_VK_ICD names another ICD file)" };
  const doctor = nti(["doctor", "--json"], env);
  const loads =
    doctor.code === 0 &&
    (JSON.parse(doctor.stdout) as { model: { graphs: { loads: Record<string, string> }[] } }).model.graphs.every((g) => g.loads.webgpu?.startsWith("loads"));
  return loads
    ? { env, skip: false as const }
    : { env: null, skip: `no WebGPU adapter on this machine: ${doctor.stdout.slice(0, 300)}${doctor.stderr.slice(0, 300)}` };
})();

test("auto tries the platform's GPU providers first and the CPU last", () => {
  assert.deepEqual(autoProviders("linux"), ["cuda", "cpu"]);
  assert.deepEqual(autoProviders("win32"), ["cuda", "dml", "cpu"]);
  assert.deepEqual(autoProviders("darwin"), ["coreml", "cpu"]);
});

test("--provider: unknown names and providers this machine lacks fail with one line saying how to get them", () => {
  const out = path.join(dir, "refused");
  const unknown = nti(["invert", SAMPLE, "--prompt", PROMPT, "--provider", "gpu", "--out", out]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /--provider must be one of auto, cpu, cuda, dml, coreml, webgpu, got "gpu"/);
  const absent = runtimeInfo().providers.some((p) => p.name === "dml") ? "coreml" : "dml";
  const r = nti(["invert", SAMPLE, "--prompt", PROMPT, "--provider", absent, "--out", out]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `^nti: the ${absent} execution provider is not available: ${absent} is not in this ONNX Runtime build \\(${process.platform}-${process.arch}\\): .*(Windows|macOS).*; or use auto or cpu\\n$`,
    ),
  );
  assert.ok(!existsSync(out), "nothing is written");
});

test("auto: the JSON names the provider that ran; falling back to the CPU comes with a note saying why", () => {
  const r = nti(["invert", SAMPLE, "--prompt", PROMPT, "--steps", "2", "--inner-steps", "1", "--out", path.join(dir, "auto"), "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { provider: string; notes: string[] };
  assert.ok(autoProviders().includes(j.provider as never), j.provider);
  if (j.provider === "cpu")
    assert.match(j.notes.join(" | "), /execution provider: cpu, since cuda (did not load the model \(.+\)|is not in this ONNX Runtime build)/);
  else assert.ok(!j.notes.some((n) => n.startsWith("execution provider")));
});

test("nti doctor: platform, runtime, providers, and which provider loads each graph of the bundled model", () => {
  const r = nti(["doctor", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as {
    platform: string;
    onnxruntime: string;
    providers: { name: string }[];
    model: { id: string; graphs: { name: string; bytes: number; loads: Record<string, string> }[] };
  };
  assert.equal(j.platform, `${process.platform}-${process.arch}`);
  assert.match(j.onnxruntime, /^\d+\.\d+\.\d+$/);
  assert.ok(j.providers.some((p) => p.name === "cpu"));
  assert.equal(j.model.id, "shapes-tiny");
  assert.deepEqual(j.model.graphs.map((g) => g.name).sort(), ["null_text_grad", "text_encoder", "unet", "unet_control", "vae_decoder", "vae_encoder"]);
  for (const g of j.model.graphs) {
    assert.ok(g.bytes > 100_000, `${g.name}: ${g.bytes} bytes`);
    assert.match(g.loads.cpu, /^loads \(\d+\.\d s\)$/, g.name);
  }
  const text = nti(["doctor"]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^platform {5}\S+ \(Node v\d+/m);
  assert.match(text.stdout, /^ {2}unet_control +\d+\.\d MB {2}unet\/control\.onnx \(weights shared with unet, null_text_grad\)\n {4}cpu +loads/m);
  assert.match(text.stdout, /^model {8}shapes-tiny at .* \(format 2, \d+\.\d MB\)$/m);
});

test("WebGPU: every graph, given the real inputs of an inversion and an edit, matches the CPU", { skip: webgpu.skip }, () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "test/node/helpers/providerParity.ts"), "webgpu", SHAPES_MODEL, SAMPLE], {
    cwd: ROOT,
    encoding: "utf8",
    env: webgpu.env!,
  });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { graphs: Record<string, { seconds: number; outputs: Record<string, { maxAbsDiff: number; maxAbs: number }> }> };
  assert.deepEqual(Object.keys(j.graphs).sort(), [
    "text_encoder/model.onnx",
    "unet/control.onnx",
    "unet/model.onnx",
    "unet/null_text_grad.onnx",
    "vae_decoder/model.onnx",
    "vae_encoder/model.onnx",
  ]);
  const rows = [];
  for (const [graph, g] of Object.entries(j.graphs)) {
    for (const [name, o] of Object.entries(g.outputs)) {
      const relative = o.maxAbsDiff / Math.max(o.maxAbs, 1e-6);
      rows.push(`${graph}:${name} ${relative.toExponential(1)}`);
      assert.ok(relative <= WEBGPU_RELATIVE_TOLERANCE, `${graph} ${name}: max |webgpu - cpu| ${o.maxAbsDiff} of ${o.maxAbs}`);
    }
  }
  process.stdout.write(`# webgpu vs cpu, max abs difference relative to the output's scale: ${rows.join(", ")}\n`);
});

test("WebGPU: nti invert --provider webgpu on the bundled model, end to end, as the CPU does it", { skip: webgpu.skip }, () => {
  const args = ["invert", SAMPLE, "--prompt", PROMPT, "--steps", "2", "--inner-steps", "1", "--no-ddim", "--json"];
  const gpu = nti([...args, "--provider", "webgpu", "--out", path.join(dir, "webgpu")], webgpu.env!);
  assert.equal(gpu.code, 0, gpu.stderr);
  const cpu = nti([...args, "--provider", "cpu", "--out", path.join(dir, "cpu")]);
  assert.equal(cpu.code, 0, cpu.stderr);
  const [g, c] = [JSON.parse(gpu.stdout), JSON.parse(cpu.stdout)] as { provider: string; psnr: number; lossPerStep: number[]; seconds: number }[];
  assert.equal(g.provider, "webgpu");
  assert.equal(c.provider, "cpu");
  assert.ok(Math.abs(g.psnr - c.psnr) < 0.05, `PSNR ${g.psnr} on webgpu, ${c.psnr} on cpu`);
  g.lossPerStep.forEach((loss, i) => assert.ok(Math.abs(loss - c.lossPerStep[i]) <= 1e-3 * c.lossPerStep[i], `step ${i}: ${loss} vs ${c.lossPerStep[i]}`));
  process.stdout.write(`# webgpu (software adapter) ${g.seconds} s, cpu ${c.seconds} s, PSNR ${g.psnr} / ${c.psnr} dB\n`);
});
