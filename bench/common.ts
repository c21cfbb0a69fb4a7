/** What the benchmarks share: the repository root, the project's Python, result files and markdown tables. */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";

export const ROOT = path.resolve(__dirname, "..");

let pythonPath: string | undefined;

/** The project's Python (.venv, created from exporter/requirements.txt on first use). */
export function projectPython(): string {
  if (pythonPath) return pythonPath;
  const env = spawnSync("bash", [path.join(ROOT, "scripts/python-env.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (env.status !== 0) throw new Error("could not set up the Python environment");
  pythonPath = env.stdout.trim();
  return pythonPath;
}

/** `python -m <args>` in the repository root; returns its stdout, throws if it fails. */
export function python(args: string[]): string {
  const r = spawnSync(projectPython(), ["-m", ...args], { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`python -m ${args.join(" ")} failed`);
  return r.stdout;
}

export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** Writes bench/results/<name>.json and .md (or under `dir`). */
export function writeResults(dir: string, name: string, json: unknown, markdown: string): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const files = { json: path.join(dir, `${name}.json`), md: path.join(dir, `${name}.md`) };
  writeFileSync(files.json, JSON.stringify(json, null, 2) + "\n");
  writeFileSync(files.md, markdown.endsWith("\n") ? markdown : markdown + "\n");
  return files;
}

export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
export const fixed = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : String(x));
