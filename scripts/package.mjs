// Builds one .vsix per platform (vsce --target), each carrying only that platform's native binaries:
// onnxruntime-node ships every platform's in one npm package, sharp takes its own from @img/* packages that npm
// installs for this machine only, so the other platforms' are fetched from the registry (npm pack, cached).
// Usage: node scripts/package.mjs [target ...]   (default: every target the runtime has binaries for)
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import * as path from "node:path";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const sharpVersion = JSON.parse(readFileSync(path.join(ROOT, "node_modules/sharp/package.json"), "utf8"));
/** vsce target -> onnxruntime-node's binary folder and sharp's native packages for it (read by the package test too). */
const TARGETS = JSON.parse(readFileSync(path.join(ROOT, "scripts/package-targets.json"), "utf8"));
const ortVersion = JSON.parse(readFileSync(path.join(ROOT, "node_modules/onnxruntime-node/package.json"), "utf8")).version;
const ORT_BIN = path.join(ROOT, "node_modules/onnxruntime-node/bin");
const napi = readdirSync(ORT_BIN).find((d) => d.startsWith("napi-v"));
const IMG = path.join(ROOT, "node_modules/@img");
const CACHE = path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "nti-package");

const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8", ...opts });

/** Puts an @img package into node_modules (from the npm registry, cached); returns whether it was added. */
function ensureImg(name) {
  const dest = path.join(IMG, name);
  if (existsSync(dest)) return false;
  const version = sharpVersion.optionalDependencies[`@img/${name}`];
  if (!version) throw new Error(`sharp ${sharpVersion.version} has no @img/${name}`);
  const tgz = path.join(CACHE, `img-${name}-${version}.tgz`);
  if (!existsSync(tgz)) {
    mkdirSync(CACHE, { recursive: true });
    run("npm", ["pack", `@img/${name}@${version}`, "--silent", "--pack-destination", CACHE]); // writes img-<name>-<version>.tgz
    if (!existsSync(tgz)) throw new Error(`npm pack @img/${name}@${version} did not write ${tgz}`);
  }
  mkdirSync(dest, { recursive: true });
  execFileSync("tar", ["-xzf", tgz, "-C", dest, "--strip-components=1"]);
  return true;
}

const wanted = process.argv.slice(2);
const targets = (wanted.length ? wanted : Object.keys(TARGETS)).filter((t) => {
  if (!TARGETS[t]) throw new Error(`unknown target ${t} (${Object.keys(TARGETS).join(", ")})`);
  if (existsSync(path.join(ORT_BIN, napi, TARGETS[t].ort))) return true;
  process.stderr.write(`package: ${t} skipped: onnxruntime-node ${ortVersion} ships no ${TARGETS[t].ort} binary\n`);
  return false;
});

run("node", ["scripts/build.mjs", "--production"]);
const base = readFileSync(path.join(ROOT, ".vscodeignore"), "utf8");
const added = [];
try {
  for (const t of targets) for (const name of TARGETS[t].img) if (ensureImg(name)) added.push(name);
  const present = readdirSync(IMG);
  for (const t of targets) {
    const own = TARGETS[t];
    const ortDirs = readdirSync(path.join(ORT_BIN, napi)).flatMap((os) => readdirSync(path.join(ORT_BIN, napi, os)).map((arch) => `${os}/${arch}`));
    const ignore = [
      base,
      `# ${t}: the other platforms' native binaries`,
      ...ortDirs.filter((d) => d !== own.ort).map((d) => `node_modules/onnxruntime-node/bin/${napi}/${d}/**`),
      ...present.filter((p) => p.startsWith("sharp-") && !own.img.includes(p)).map((p) => `node_modules/@img/${p}/**`),
    ].join("\n");
    const ignoreFile = path.join(ROOT, "dist", `.vscodeignore-${t}`);
    writeFileSync(ignoreFile, ignore + "\n");
    const out = path.join(ROOT, "dist", `null-text-inversion-${t}.vsix`);
    run("npx", ["vsce", "package", "--target", t, "--ignoreFile", ignoreFile, "--allow-missing-repository", "--no-rewrite-relative-links", "--out", out], { stdio: ["ignore", "ignore", "inherit"] });
    rmSync(ignoreFile);
    process.stdout.write(`${path.relative(ROOT, out)}  ${(statSync(out).size / 1e6).toFixed(1)} MB\n`);
  }
} finally {
  // the fetched packages are another platform's: leave node_modules as npm made it
  for (const name of added) rmSync(path.join(IMG, name), { recursive: true, force: true });
}
