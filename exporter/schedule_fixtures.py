"""Null-text schedule fixtures for the engine (`python -m exporter.schedule_fixtures`), on top of `exporter fixtures`.

The main fixtures follow the notebook's inner loop from the empty prompt's embedding. The engine's faster
schedules (docs/design.md §1 options, see src/core/inversion.ts) are checked here against the same reference
code, from the same seeded tiny model and stored pivots: the "lean" inner loop (loss checked before the
Adam step, lowest-loss embedding kept, no extra UNet pass), the NPI-style start from the prompt embedding,
and a looser early-stop threshold so that the lean loop's early exit is exercised as well as its full run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .configs import build_random
from .reference import Reference, Settings

OUT = Path("test/fixtures/tiny")
VARIANTS = {
    "lean_empty": dict(inner_loop="lean", null_init="empty"),
    "lean_prompt": dict(inner_loop="lean", null_init="prompt", inner_steps=5),
    "notebook_prompt_loose": dict(inner_loop="notebook", null_init="prompt", early_stop=2e-3, early_stop_slope=0.0),
    "lean_prompt_loose": dict(inner_loop="lean", null_init="prompt", early_stop=2e-3, early_stop_slope=0.0),
}


def main(out: Path = OUT) -> None:
    meta = json.loads((out / "fixtures.json").read_text())
    fx = load_file(str(out / "fixtures.safetensors"))
    base = Settings(**meta["settings"])
    steps = base.steps
    ref = Reference(build_random("tiny", 0), base)
    cond, uncond = fx["cond_embedding"], fx["uncond_embedding"]
    pivots = [fx["pivots"][i:i + 1] for i in range(steps + 1)]

    # the seeded model must be the one the fixtures were made with
    check = ref.ddim_inversion(fx["latent_z0"], cond)
    err = max(float((a - b).abs().max()) for a, b in zip(check, pivots))
    if err > 1e-5:
        raise SystemExit(f"the seeded tiny model differs from the fixtures' (pivot error {err:.2e})")

    tensors: dict[str, torch.Tensor] = {}
    info: dict = {"variants": {}}
    for name, overrides in VARIANTS.items():
        ref.s = replace(base, **overrides)
        ref.unet_forward = 0
        nt = ref.null_text(pivots, cond, uncond)
        tensors[f"{name}_null_embeddings"] = torch.cat(nt.null_embeddings)
        tensors[f"{name}_final_latent"] = nt.final_latent
        info["variants"][name] = {
            "settings": asdict(ref.s),
            "losses": nt.losses,
            "unet_forward": nt.unet_forward,
            "unet_backward": nt.unet_backward,
        }
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, str(out / "schedule_fixtures.safetensors"))
    (out / "schedule_fixtures.json").write_text(json.dumps(info, indent=1) + "\n")
    for name, v in info["variants"].items():
        print(name, "iterations", [len(losses) for losses in v["losses"]], "forward", v["unet_forward"], "backward", v["unet_backward"])


if __name__ == "__main__":
    main()
