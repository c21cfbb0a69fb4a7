"""Ground-truth edit benchmark on held-out shapes scenes, Python side of `npm run bench:quality`.

    python -m exporter.shapes.bench make --out DIR --scenes 50 [--seed 0]
        writes DIR/set.json and the PNGs: per scene the source, and per edit (colour swap, shape swap,
        background swap) the edited prompt, the true edited image, the true change mask, the words local
        blend uses (`blend`: the edited words of both prompts, as Prompt-to-Prompt does;
        `blend_source_attribute`: one source word of the changed thing), and what the edit must produce.
    python -m exporter.shapes.bench score --set DIR --results RESULTS.json --json OUT.json --markdown OUT.md
        scores the engine's images (RESULTS.json, written by bench/quality.ts) against the truth:
        reconstruction PSNR and SSIM, edit PSNR, background PSNR outside the true mask, edit accuracy
        (the generator's own pixel classifier), seconds; per method and edit type, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..reference import psnr
from . import scenes as S

EDIT_TYPES = ("colour", "shape", "background")


def _changed_index(a: S.Scene, b: S.Scene) -> int:
    return next(i for i, (x, y) in enumerate(zip(a.objects, b.objects)) if x != y)


def make(out: Path, n_scenes: int, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    scenes = S.split_scenes("heldout", n_scenes, seed=seed + 2000)
    items = []
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng([seed, i])
        source = f"scene-{i:03d}.png"
        Image.fromarray(S.render(scene)).save(out / source)
        edits = []
        for kind in EDIT_TYPES:
            if kind == "colour":
                e = S.colour_swap(scene, rng)
                j = _changed_index(scene, e.edited_scene)
                obj = e.edited_scene.objects[j]
                blend, target = [obj.shape], {"colour": obj.colour}
                attribute = [scene.objects[j].colour]
            elif kind == "shape":
                e = S.shape_swap(scene, rng)
                j = _changed_index(scene, e.edited_scene)
                blend = [scene.objects[j].shape, e.edited_scene.objects[j].shape]
                target = {"shape": e.edited_scene.objects[j].shape}
                attribute = [scene.objects[j].colour]  # the changed object's other word, which shapes-tiny localises
            else:
                e = S.background_swap(scene, rng)
                blend, target = [scene.background, e.edited_scene.background, "background"], {"background": e.edited_scene.background}
                attribute = [scene.background]
            truth = f"scene-{i:03d}-{kind}.png"
            mask = f"scene-{i:03d}-{kind}-mask.png"
            Image.fromarray(S.render(e.edited_scene)).save(out / truth)
            Image.fromarray(e.change_mask.astype(np.uint8) * 255).save(out / mask)
            edits.append({"type": kind, "prompt": e.edited_prompt, "truth": truth, "mask": mask,
                          "blend": blend, "blend_source_attribute": attribute, "target": target})
        items.append({"id": i, "source": source, "prompt": S.prompt_for(scene), "objects": len(scene.objects),
                      "edits": edits})
    data = {"seed": seed, "size": scenes[0].size, "scenes": items}
    (out / "set.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over RGB (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, range 255)."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for ch in range(x.shape[-1]):
        def f(im):
            return ndimage.gaussian_filter(im, 1.5, truncate=3.5)
        xi, yi = x[..., ch], y[..., ch]
        mx, my = f(xi), f(yi)
        vx, vy, cxy = f(xi * xi) - mx * mx, f(yi * yi) - my * my, f(xi * yi) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        values.append(s.mean())
    return float(np.mean(values))


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _right(image: np.ndarray, edit: dict, mask: np.ndarray) -> bool:
    target = edit["target"]
    if "background" in target:
        return S.estimate_background(image)[0] == target["background"]
    pred = S.classify(image, mask=mask)
    if pred is None:
        return False
    return all(getattr(pred, k) == v for k, v in target.items())


def score(set_dir: Path, results_path: Path) -> dict:
    data = json.loads((set_dir / "set.json").read_text())
    results = json.loads(results_path.read_text())
    by_scene = {r["id"]: r for r in results["scenes"]}
    rows = []
    labels: dict[str, str] = {}  # method id -> its label, as the engine's METHOD_INFO says; in the engine's order
    for item in data["scenes"]:
        r = by_scene.get(item["id"])
        if r is None:
            continue
        source = _load(set_dir / item["source"])
        for method, m in r["methods"].items():
            labels.setdefault(method, m.get("label", method))
            rec = _load(Path(m["reconstruction"]))
            row = {"scene": item["id"], "method": method, "psnr": psnr(rec, source), "ssim": ssim(rec, source),
                   "invert_seconds": m["seconds"], "unet_forward": m["unetForward"], "unet_backward": m["unetBackward"]}
            for edit, out in zip(item["edits"], m["edits"]):
                image = _load(Path(out["image"]))
                truth = _load(set_dir / edit["truth"])
                mask = _load(set_dir / edit["mask"])[..., 0] > 127
                k = edit["type"]
                row[f"{k}_edit_psnr"] = psnr(image, truth)
                row[f"{k}_background_psnr"] = psnr(image, truth, ~mask)
                row[f"{k}_right"] = _right(image, edit, mask)
                row[f"{k}_seconds"] = out["seconds"]
            rows.append(row)
    summary = {}
    for method, label in labels.items():
        mr = [x for x in rows if x["method"] == method]
        def mean(key, rows=mr):
            return float(np.mean([x[key] for x in rows]))
        s = {"label": label, "scenes": len(mr), "psnr": mean("psnr"), "ssim": mean("ssim"), "invert_seconds": mean("invert_seconds"),
             "unet_forward": mean("unet_forward"), "unet_backward": mean("unet_backward")}
        for k in EDIT_TYPES:
            s[k] = {"edit_psnr": mean(f"{k}_edit_psnr"), "background_psnr": mean(f"{k}_background_psnr"),
                    "accuracy": mean(f"{k}_right"), "seconds": mean(f"{k}_seconds")}
        summary[method] = s
    return {"set": {"scenes": len(data["scenes"]), "seed": data["seed"], "size": data["size"]},
            "settings": results.get("settings", {}), "model": results.get("model"), "summary": summary, "rows": rows}


def markdown(scored: dict) -> str:
    s = scored["summary"]
    lines = [
        (f"Held-out shapes scenes: {scored['set']['scenes']} (seed {scored['set']['seed']}), model "
         f"`{scored.get('model')}`, settings {json.dumps(scored.get('settings', {}))}."),
        "",
        "| method | recon PSNR | recon SSIM | invert s | UNet fwd / bwd |"
        + "".join(f" {k} edit PSNR | {k} bg PSNR | {k} acc |" for k in EDIT_TYPES) + " edit s |",
        "|---|---|---|---|---|" + "---|---|---|" * len(EDIT_TYPES) + "---|",
    ]
    for method, m in s.items():
        cells = [m.get("label", method), f"{m['psnr']:.2f}", f"{m['ssim']:.3f}", f"{m['invert_seconds']:.2f}",
                 f"{m['unet_forward']:.0f} / {m['unet_backward']:.0f}"]
        for k in EDIT_TYPES:
            e = m[k]
            cells += [f"{e['edit_psnr']:.2f}", f"{e['background_psnr']:.2f}", f"{e['accuracy']:.2f}"]
        cells.append(f"{np.mean([m[k]['seconds'] for k in EDIT_TYPES]):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", ("PSNR in dB against the source (reconstruction) or the true edited image (edit); bg PSNR: outside "
                   "the true change mask; acc: the generator's pixel classifier finds the asked colour / shape in the "
                   "mask, or the asked background; seconds per image on the machine that ran it.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("--out", type=Path, required=True)
    mk.add_argument("--scenes", type=int, default=50)
    mk.add_argument("--seed", type=int, default=0)
    sc = sub.add_parser("score")
    sc.add_argument("--set", type=Path, required=True)
    sc.add_argument("--results", type=Path, required=True)
    sc.add_argument("--json", type=Path, required=True)
    sc.add_argument("--markdown", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "make":
        data = make(args.out, args.scenes, args.seed)
        print(f"wrote {len(data['scenes'])} scenes to {args.out}", file=sys.stderr)
        return 0
    scored = score(args.set, args.results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(scored, indent=1, default=float) + "\n")
    md = markdown(scored)
    args.markdown.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
