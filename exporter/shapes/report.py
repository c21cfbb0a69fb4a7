"""Write models/shapes-tiny/REPORT.md: the issue's quality bars, measured, with the command that measured them.

    python -m exporter.shapes.report --model <trained diffusers folder> --out models/shapes-tiny/REPORT.md

- text-to-image: DDIM 50 steps, w = 7.5, held-out prompts, judged by the generator's pixel classifier;
- held-out scenes through the PyTorch reference: VAE-only, DDIM-inversion, NPI, Direct Inversion and
  null-text reconstruction PSNR;
- edits after null-text inversion (Prompt-to-Prompt replace, local blend on the changed thing's words): colour,
  shape and background swaps, plus the colour swap without blend and with every map injected at every step;
  the asked change inside the true mask, background PSNR outside it, PSNR against the true edited image, the
  objects' IoU with the truth, the blend mask's share of the latent.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..export import load_diffusers
from ..reference import EditSpec, Reference, Settings, default_blend, edit_nulls, psnr
from . import outputs as O
from . import sample as SP
from . import scenes as S

#: The bars of the shapes-tiny issues (#8, then #21 for the edits): a missed bar is reported, never lowered.
BARS = {
    "t2i_accuracy": (">=", 0.90),
    "nulltext_psnr": (">=", 30.0),
    "nulltext_minus_ddim_db": (">=", 6.0),
    "colour_swap_accuracy": (">=", 0.90),
    "colour_swap_background_psnr": (">=", 27.0),
    "colour_swap_background_psnr_p10": (">=", 24.0),  # 90% of scenes at or above 24 dB
    "colour_swap_mask_share_one_object": ("<=", 0.5),
    "colour_swap_full_injection_background_psnr": (">=", 28.0),
    "shape_swap_object_iou": (">=", 0.8),
    "background_swap_object_iou": (">=", 0.8),
}

#: The report's edits: Prompt-to-Prompt replace after null-text inversion, default injection (cross 0.8, self
#: 0.4), local blend on the words of the changed thing in both prompts, as the notebook's word swaps do.
EDIT_KINDS = ("colour", "shape", "background")
#: The colour swap again: with the CLI's and the panel's defaults (local blend on the swapped words, the empty
#: prompt's null in the edited branch; the issue's bars are measured on it), with the inversion's nulls in both
#: branches (the null-text paper's editing), with no blend, and with every map injected at every step and no
#: blend. Every edit but colour_inverted_null gives the edited branch the empty prompt's null.
COLOUR_VARIANTS = ("colour_defaults", "colour_inverted_null", "colour_no_blend", "colour_full_injection")


def _reconstruct(ref: Reference, image: np.ndarray, prompt: str) -> dict:
    steps = ref.s.steps
    cond, uncond = ref.encode_prompts([prompt]), ref.encode_prompts([""])
    z0 = ref.image_to_latent(image)
    t0 = time.perf_counter()
    pivots = ref.ddim_inversion(z0, cond)
    t_inv = time.perf_counter() - t0
    forward0 = ref.unet_forward
    t0 = time.perf_counter()
    nt = ref.null_text(pivots, cond, uncond)
    t_nt = time.perf_counter() - t0
    out = {
        "vae": ref.latent_to_image(z0)[0],
        "ddim": ref.latent_to_image(ref.sample(pivots[-1], cond, [uncond] * steps))[0],
        "npi": ref.latent_to_image(ref.sample(pivots[-1], cond, ref.npi(cond)))[0],
        "direct": ref.latent_to_image(ref.sample(pivots[-1], cond, [uncond] * steps,
                                                 ref.direct_offsets(pivots, cond, uncond)))[0],
        "nulltext": ref.latent_to_image(ref.sample(pivots[-1], cond, nt.null_embeddings))[0],
    }
    return {"images": out, "pivots": pivots, "nulls": nt.null_embeddings, "uncond": uncond, "seconds_inversion": t_inv,
            "seconds_nulltext": t_nt, "nulltext_unet_forward": ref.unet_forward - forward0,
            "nulltext_unet_backward": nt.unet_backward,
            "nulltext_final_loss": nt.losses[-1][-1]}


class ColourSwapCase(NamedTuple):
    edit: S.Edit
    obj: S.Obj  # the recoloured object, as in the edited scene
    source_obj: S.Obj  # the same object before the swap
    truth: np.ndarray  # the edited scene rendered
    outside: np.ndarray  # bool [H, W]: the pixels the edit must leave alone

    def colour_right(self, image: np.ndarray) -> bool:
        pred = S.classify(image, mask=self.edit.change_mask)
        return bool(pred is not None and pred.colour == self.obj.colour)


def colour_swap_case(scene: S.Scene, rng: np.random.Generator) -> ColourSwapCase:
    """The report's colour swap of `scene` with what judging it needs."""
    edit = S.colour_swap(scene, rng)
    changed = next(i for i, (a, b) in enumerate(zip(scene.objects, edit.edited_scene.objects)) if a != b)
    return ColourSwapCase(edit, edit.edited_scene.objects[changed], scene.objects[changed], S.render(edit.edited_scene),
                          ~edit.change_mask)


def objects_iou(image: np.ndarray, truth_scene: S.Scene) -> float:
    """IoU of the image's foreground (pixels nearer an object colour than the image's own background, measured
    on its border) with the true objects' pixels: whether the objects kept their place and size, whatever
    colour the background came out."""
    fg = S.foreground(image, S.estimate_background(image)[1])
    want = np.any(S.object_masks(truth_scene), axis=0)
    return float((fg & want).sum() / max(1, (fg | want).sum()))


def edit_case(scene: S.Scene, kind: str, rng: np.random.Generator) -> tuple[S.Edit, list[list[str]], Callable[[np.ndarray], bool]]:
    """(the edit, its blend words per prompt, a judge: image -> the asked change is there)."""
    if kind == "colour":
        case = colour_swap_case(scene, rng)
        return case.edit, [[case.obj.shape], [case.obj.shape]], case.colour_right
    if kind == "shape":
        e = S.shape_swap(scene, rng)
        j = next(i for i, (a, b) in enumerate(zip(scene.objects, e.edited_scene.objects)) if a != b)
        new = e.edited_scene.objects[j].shape

        def right(image):
            pred = S.classify(image, mask=e.change_mask)
            return bool(pred is not None and pred.shape == new)
        return e, [[scene.objects[j].shape], [new]], right
    e = S.background_swap(scene, rng)
    bg = e.edited_scene.background
    return e, [[scene.background, "background"], [bg, "background"]], \
        lambda image: S.estimate_background(image)[0] == bg


def _edits(ref: Reference, scene: S.Scene, rec: dict, seed: int, index: int) -> dict:
    """The three edits of a scene (each from its own stream, so the colour swap is the one earlier reports made),
    plus the colour swap with every map injected at every step and no blend."""
    out = {}
    for kind in EDIT_KINDS:
        rng = np.random.default_rng([seed, index] if kind == "colour" else [seed, index, EDIT_KINDS.index(kind)])
        edit, blend, right = edit_case(scene, kind, rng)
        truth, outside = S.render(edit.edited_scene), ~edit.change_mask
        # (spec, the edited branch's null): the product's default for null-text is the empty prompt's
        runs = {kind: (EditSpec("replace", blend_words=blend), "empty")}
        if kind == "colour":  # the CLI's and the panel's defaults, and each changed alone
            defaults = EditSpec("replace", blend_word_indices=default_blend(edit.source_prompt, [edit.edited_prompt]))
            runs["colour_defaults"] = (defaults, "empty")
            runs["colour_inverted_null"] = (defaults, "inverted")
            runs["colour_no_blend"] = (EditSpec("replace"), "empty")
            runs["colour_full_injection"] = (EditSpec("replace", cross_replace_steps=1.0, self_replace_steps=1.0),
                                             "empty")
        for name, (spec, edit_null) in runs.items():
            nulls = edit_nulls(rec["nulls"], rec["uncond"], 2, edit_null)
            latents, ctl = ref.edit(rec["pivots"][-1], [edit.source_prompt, edit.edited_prompt], spec, nulls)
            image = ref.latent_to_image(latents[1:2])[0]
            out[name] = {"source": edit.source_prompt, "edited": edit.edited_prompt, "right": right(image),
                         "background_psnr": psnr(image, truth, outside), "edit_psnr": psnr(image, truth),
                         "reconstruction_background_psnr": psnr(rec["images"]["nulltext"], truth, outside),
                         "object_iou": objects_iou(image, edit.edited_scene),
                         "mask_coverage": ctl.mask_share(),  # 1.0 without a blend
                         "objects": len(scene.objects)}
    return out


def _scene_rows(model_dir: str, device: str, indices: list[int], n_scenes: int, seed: int,
                progress: str | None) -> list[dict]:
    """Reconstruction and colour-swap figures of the held-out scenes at `indices` (one worker's share)."""
    torch.manual_seed(seed)
    ref = Reference(load_diffusers(model_dir), Settings(), device)
    scenes = S.split_scenes("heldout", n_scenes, seed=seed + 1000)
    rows = []
    for i in indices:
        scene = scenes[i]
        image = S.render(scene)
        rec = _reconstruct(ref, image, S.prompt_for(scene))
        row = {"scene": i, **{f"psnr_{k}": psnr(v, image) for k, v in rec["images"].items()}}
        row.update({k: rec[k] for k in ("seconds_inversion", "seconds_nulltext", "nulltext_unet_forward",
                                         "nulltext_unet_backward", "nulltext_final_loss")})
        # each scene its own streams, so the figures do not depend on how scenes are split among workers
        row["edits"] = _edits(ref, scene, rec, seed, i)
        rows.append(row)
        if progress is not None:
            with open(progress, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
        print(f"scene {i + 1}/{n_scenes}: null-text {row['psnr_nulltext']:.2f} dB, DDIM {row['psnr_ddim']:.2f} dB, "
              f"{row['seconds_nulltext']:.1f}s; " + ", ".join(f"{k} {v['background_psnr']:.1f} dB {'right' if v['right'] else 'wrong'}" for k, v in row["edits"].items()), file=sys.stderr,
              flush=True)
    return rows


def measure(model_dir: Path, device: str, n_scenes: int, n_prompts: int, seed: int,
            progress: Path | None = None, workers: int = 1) -> dict:
    """All figures of the report. Scenes are shared among `workers` processes (a GPU runs several at once);
    each scene's row is also appended to `progress` (JSON lines) as it is done."""
    torch.manual_seed(seed)
    t2i = None
    if n_prompts:
        t2i = SP.evaluate_t2i(SP.load(model_dir, device), n=n_prompts, seed=seed)
        t2i.pop("images", None)
        if progress is not None:
            progress.write_text(json.dumps({"t2i": t2i}) + "\n")
    prog = str(progress) if progress is not None else None
    if workers <= 1:
        rows = _scene_rows(str(model_dir), device, list(range(n_scenes)), n_scenes, seed, prog)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            parts = [pool.submit(_scene_rows, str(model_dir), device, list(range(w, n_scenes, workers)), n_scenes,
                                 seed, prog) for w in range(workers)]
            rows = sorted((r for p in parts for r in p.result()), key=lambda r: r["scene"])

    def mean(key):
        return float(np.mean([r[key] for r in rows]))

    def edits(name):
        e = [r["edits"][name] for r in rows]
        bg = [x["background_psnr"] for x in e]
        return {"accuracy": float(np.mean([x["right"] for x in e])), "background_psnr": float(np.mean(bg)),
                "background_psnr_p10": float(np.percentile(bg, 10)),
                "scenes_below_24db": int(sum(b < 24.0 for b in bg)),
                "edit_psnr": float(np.mean([x["edit_psnr"] for x in e])),
                "reconstruction_background_psnr": float(np.mean([x["reconstruction_background_psnr"] for x in e])),
                "object_iou": float(np.mean([x["object_iou"] for x in e])),
                "mask_coverage": float(np.mean([x["mask_coverage"] for x in e])),
                "mask_coverage_one_object": float(np.mean([x["mask_coverage"] for x in e if x["objects"] == 1]
                                                          or [float("nan")])),
                "full_masks": int(sum(x["mask_coverage"] >= 0.999 for x in e))}

    summary = {
        "t2i": t2i,
        "scenes": n_scenes,
        "psnr": {k: mean(f"psnr_{k}") for k in ("vae", "ddim", "npi", "direct", "nulltext")},
        "seconds_nulltext_mean": mean("seconds_nulltext"),
        "nulltext_unet_forward_mean": mean("nulltext_unet_forward"),
        "nulltext_unet_backward_mean": mean("nulltext_unet_backward"),
        "edits": {name: edits(name) for name in (*EDIT_KINDS, *COLOUR_VARIANTS) if name in rows[0]["edits"]},
        "rows": rows,
    }
    e = summary["edits"]
    defaults = e.get("colour_defaults", e["colour"])  # reports before the default blend: the object-word blend
    measured = {
        "t2i_accuracy": t2i["accuracy"] if t2i else float("nan"),
        "nulltext_psnr": summary["psnr"]["nulltext"],
        "nulltext_minus_ddim_db": summary["psnr"]["nulltext"] - summary["psnr"]["ddim"],
        "colour_swap_accuracy": defaults["accuracy"],
        "colour_swap_background_psnr": defaults["background_psnr"],
        "colour_swap_background_psnr_p10": defaults["background_psnr_p10"],
        "colour_swap_mask_share_one_object": defaults["mask_coverage_one_object"],
        "colour_swap_full_injection_background_psnr": e["colour_full_injection"]["background_psnr"],
        "shape_swap_object_iou": e["shape"]["object_iou"],
        "background_swap_object_iou": e["background"]["object_iou"],
    }
    summary["bars"] = {k: {"bar": f"{op} {v}", "measured": measured[k],
                           "met": bool(measured[k] >= v if op == ">=" else measured[k] <= v)}
                       for k, (op, v) in BARS.items()}
    return summary


#: What would move a bar, as measured so far (see the issues: a missed bar is reported, never lowered).
MISSED_WHY = {
    "t2i_accuracy": (
        "two-object prompts (0.81; one-object prompts 0.99). The grounding stage makes every word say only its own "
        "phrase (the end token and the padding no longer carry the sentence), so the UNet must bind each colour to "
        "its shape through the word maps; cross-attention at 16x16 as well as 8x8 (`--unet-layout sd`) raised the "
        "two-object prompts from 0.72. More grounding steps, or a larger UNet."),
    "nulltext_psnr": "the VAE is the ceiling (the first column of the reconstruction table).",
    "nulltext_minus_ddim_db": "the VAE is the ceiling; DDIM-only is the model's own drift under guidance.",
    "colour_swap_accuracy": (
        "8 of 50 wrong at the defaults (report.json has each): three have a repeated word in a prompt (\"a orange "
        "square and a orange diamond\" -> \"... a blue diamond\"), which a model that binds colour to shape by the "
        "words' maps finds hard; in the other five the object stays in place but comes out in another colour than "
        "asked, often smaller (objects' IoU 0.26-0.84). With the inversion's nulls in the edited branch too it was "
        "0.72."),
    "colour_swap_background_psnr": (
        "the word maps are read at 8x8, and local blend's 3x3 max-pool widens them by a whole cell (8 px of 64), so "
        "the mask leaves a ring around the object where the edit branch may drift; and scenes where the edit drifts "
        "as a whole (EDIT_DIAGNOSTICS.md)."),
    "colour_swap_background_psnr_p10": (
        "the ring: the blend mask is made from 8x8 maps widened by a cell, so it holds a ring of background around "
        "the object (8 px of 64) that the true change mask does not, and inside the mask the edited branch redraws "
        "the object's edge and that ring; 6 of the 10 lowest scenes have two objects, two rings. The model has "
        "cross-attention at 16x16 too: maps read there make a tighter mask (p10 26.05 dB on these scenes) but the "
        "asked change is then made less often (colour 0.80, shape swap 0.66; CHANGELOG), so the maps stay 8x8."),
    "colour_swap_mask_share_one_object": "the mask is made from 8x8 maps (see colour_swap_background_psnr).",
    "colour_swap_full_injection_background_psnr": (
        "injecting every map at every step pins the layout, but the edit branch still drifts in some scenes: with "
        "the inversion's nulls in the edited branch the drift came through guidance (w = 7.5 amplifies the nulls' "
        "fit to the source prompt); with the empty prompt's it is the edited branch's own sampling error."),
    "shape_swap_object_iou": (
        "the objects' outlines: the IoU compares the pixels nearer an object colour than the background with the "
        "true objects' pixels, so soft and shifted edges count as much as a lost object: an edge moved by a pixel "
        "or two costs a 14-34 px object much of its IoU, and an object can shrink or move (per-scene IoU in "
        "report.json)."),
    "background_swap_object_iou": (
        "as shape_swap_object_iou; and in a background swap local blend on the background words covers the whole "
        "latent, so nothing pins the objects."),
}


def markdown(summary: dict, command: str, model_dir: Path, device: str) -> str:
    p = summary["psnr"]
    run = summary.get("run", {})
    sharing = f" ({run['workers']} worker processes sharing it)" if run.get("workers", 1) > 1 else ""
    lines = [
        "# shapes-tiny: quality report",
        "",
        "Written by `exporter/shapes/report.py`, not by hand. Reproduce with:",
        "",
        f"    {command}",
        "",
        f"Model: `{model_dir}`; device: {device}; torch {run.get('torch', torch.__version__)}; "
        f"{run.get('machine', platform.machine())}.",
        "",
        "## Bars",
        "",
        "| bar | target | measured | met |",
        "|---|---|---|---|",
    ]
    for k, b in summary["bars"].items():
        lines.append(f"| {k} | {b['bar']} | {b['measured']:.3f} | {'yes' if b['met'] else '**no**'} |")
    t2i = summary["t2i"]
    if t2i:
        lines += ["", f"## Text-to-image ({t2i['n']} held-out prompts, DDIM {t2i['steps']} steps, w = {t2i['guidance']})",
                  "", "| colour + shape (whole prompt) | per object | colour | shape | background | by objects |",
                  "|---|---|---|---|---|---|",
                  f"| {t2i['accuracy']:.3f} | {t2i['per_object']:.3f} | {t2i['colour_accuracy']:.3f} | "
                  f"{t2i['shape_accuracy']:.3f} | {t2i['background_accuracy']:.3f} | "
                  f"{json.dumps(t2i['accuracy_by_objects'])} |"]
    lines += [
        "", f"## Reconstruction ({summary['scenes']} held-out scenes, PyTorch reference, 50 steps, w = 7.5)", "",
        "| VAE only (ceiling) | DDIM inversion | NPI | Direct Inversion | null-text |",
        "|---|---|---|---|---|",
        f"| {p['vae']:.2f} dB | {p['ddim']:.2f} dB | {p['npi']:.2f} dB | {p['direct']:.2f} dB | {p['nulltext']:.2f} dB |",
        "",
        f"Null-text: {summary['seconds_nulltext_mean']:.1f} s per image on {device}"
        f"{sharing}, "
        f"{summary['nulltext_unet_forward_mean']:.0f} UNet forwards and "
        f"{summary['nulltext_unet_backward_mean']:.0f} backwards per image (mean).",
        "", "## Edits (null-text inversion, Prompt-to-Prompt replace, cross 0.8 / self 0.4, the empty prompt's null "
        "in the edited branch unless said; the first three rows blend locally on the changed thing's words in "
        "both prompts; the colour-swap bars are measured with the defaults)", "",
        "| edit | asked change there | background PSNR outside the true mask (mean / 10th pct / scenes < 24 dB) "
        "| PSNR vs the true edit | the reconstruction's own background PSNR | objects' IoU with the truth "
        "| local-blend mask: share of the latent (one-object scenes) | masks that are the whole latent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"colour": "colour swap", "shape": "shape swap", "background": "background swap",
             "colour_defaults": "colour swap, the CLI's and the panel's defaults (local blend on the swapped words)",
             "colour_inverted_null": "colour swap, the defaults but the inversion's nulls in the edited branch too "
                                     "(`--edit-null inverted`, the null-text paper's editing)",
             "colour_no_blend": "colour swap, no blend (`--blend none`)",
             "colour_full_injection": "colour swap, cross 1 / self 1, no blend"}
    for name, x in summary["edits"].items():
        blended = name not in ("colour_no_blend", "colour_full_injection")  # the others blend
        lines.append(
            f"| {names[name]} | {x['accuracy']:.2f} | {x['background_psnr']:.2f} / {x['background_psnr_p10']:.2f} dB / "
            f"{x['scenes_below_24db']} | {x['edit_psnr']:.2f} dB | {x['reconstruction_background_psnr']:.2f} dB | "
            f"{x['object_iou']:.2f} | "
            + (f"{x['mask_coverage']:.2f} ({x['mask_coverage_one_object']:.2f}) | {x['full_masks']} of {summary['scenes']} |"
               if blended else "- | - |"))
    lines += [
        "",
        "Background swap: its true mask is the whole background, so its background PSNR is over the objects' "
        "pixels.",
    ]
    missed = [k for k, b in summary["bars"].items() if not b["met"]]
    if missed:
        lines += ["", "## Missed bars", ""] + [f"- {k}: {MISSED_WHY.get(k, '')}" for k in missed]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m exporter.shapes.report", description=__doc__)
    ap.add_argument("--model", required=True, type=Path, help="trained diffusers-style folder")
    O.add_output_args(ap, "REPORT.md")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the scenes (several fit on a GPU)")
    args = ap.parse_args(argv)
    if args.render_only:
        summary = O.saved_summary(ap, args)
        run = summary["run"]
        args.out.write_text(markdown(summary, run["command"], Path(run["model"]), run["device"]))
        return 0
    O.make_parents(args)
    progress = args.json.with_suffix(".progress.jsonl") if args.json else None
    t0 = time.perf_counter()
    summary = measure(args.model, args.device, args.scenes, args.prompts, args.seed, progress, args.workers)
    command = O.command_line("exporter.shapes.report", argv)
    summary["run"] = {"command": command, "model": str(args.model), "device": args.device,
                      "torch": torch.__version__, "machine": platform.machine(), "workers": args.workers,
                      "threads": torch.get_num_threads(), "wall_s": time.perf_counter() - t0}
    O.write(args, markdown(summary, command, args.model, args.device), summary)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
