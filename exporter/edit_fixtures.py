"""Extra editing fixtures for the engine (`python -m exporter.edit_fixtures`), on top of `exporter fixtures`.

On the tiny random model the word masks of local blend cover the whole latent (its attention is nearly
uniform), so the main fixtures cannot show a partial blend. This adds, from the same seeded model and the
stored pivots and null embeddings:
- `edit_user_mask_*`: a word swap with a user mask (left half) replacing the word mask, through the
  reference's whole sampler;
- `edit_empty_null_*`: a word swap whose edited branch gets the empty prompt's null (`edit_nulls`, "empty"),
  the source branch the inversion's;
- `blend_*`: one call of the reference's local blend on a structured attention sum (a bump over the
  blend word's token), so the mask arithmetic (token sum, 3x3 max-pool, nearest upsample, normalise,
  threshold, union with the source) is compared on a mask that is really partial.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .configs import build_random
from .fixtures import EDITS, SOURCE_PROMPT
from .reference import MAX_TOKENS, EditSpec, P2PController, Reference, Settings, edit_nulls

OUT = Path("test/fixtures/tiny")
USER_MASK_PROMPT = "a blue circle on a white background"


def main(out: Path = OUT) -> None:
    meta = json.loads((out / "fixtures.json").read_text())
    fx = load_file(str(out / "fixtures.safetensors"))
    steps = meta["settings"]["steps"]
    ref = Reference(build_random("tiny", 0), Settings(**meta["settings"]))
    z_t = fx["pivots"][-1:]
    nulls = [fx["null_embeddings"][i:i + 1] for i in range(steps)]

    # the seeded model must be the one the fixtures were made with
    prompt, spec = EDITS["replace"]
    check, _ = ref.edit(z_t, [SOURCE_PROMPT, prompt], spec, nulls)
    err = float((check - fx["edit_replace_latents"]).abs().max() / fx["edit_replace_latents"].abs().max())
    if err > 1e-5:
        raise SystemExit(f"the seeded tiny model differs from the fixtures' (relative error {err:.2e})")

    size = z_t.shape[-1]
    user_mask = torch.zeros(size, size)
    user_mask[:, : size // 2] = 1
    spec = EditSpec("replace", user_mask=user_mask, user_mask_mode="replace")
    latents, ctl = ref.edit(z_t, [SOURCE_PROMPT, USER_MASK_PROMPT], spec, nulls)

    empty_nulls = edit_nulls(nulls, ref.encode_prompts([""]), 2, "empty")
    empty_latents, empty_ctl = ref.edit(z_t, [SOURCE_PROMPT, USER_MASK_PROMPT], EditSpec("replace"), empty_nulls)

    # one local-blend call on a structured attention sum
    g = torch.Generator().manual_seed(1)
    r = 8
    blend_spec = EditSpec("replace", blend_words=[["circle"], ["circle"]])
    blend = P2PController(ref.tokens, [SOURCE_PROMPT, USER_MASK_PROMPT], blend_spec, steps, r * r, 10 ** 9)
    store = torch.rand(2, r * r, MAX_TOKENS, generator=g) * 0.1
    yy, xx = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
    bump = torch.exp(-((yy - 2.0) ** 2 + (xx - 5.0) ** 2) / 2.0).reshape(-1)
    circle = ref.tokens.word_indices(SOURCE_PROMPT, "circle")[0]
    store[0, :, circle] += 3 * bump
    store[1, :, circle] += 3 * bump.reshape(r, r).roll(1, dims=0).reshape(-1)
    blend.store_sum = store
    x_in = torch.randn(2, 4, size, size, generator=g)
    x_out = blend.step_callback(x_in.clone(), steps // 2)
    mask = blend.mask_history[-1]

    tensors = {
        "edit_user_mask_latents": latents,
        "edit_user_mask_maps": ctl.average_maps(),
        "user_mask": user_mask,
        "edit_empty_null_latents": empty_latents,
        "edit_empty_null_maps": empty_ctl.average_maps(),
        "blend_store_sum": store.reshape(2, r, r, MAX_TOKENS).contiguous(),
        "blend_x_in": x_in,
        "blend_x_out": x_out,
        "blend_mask": mask,
    }
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, str(out / "edit_fixtures.safetensors"))
    info = {
        "source_prompt": SOURCE_PROMPT,
        "user_mask_edit": {"prompt": USER_MASK_PROMPT, "mode": "replace", "user_mask_mode": "replace"},
        "empty_null_edit": {"prompt": USER_MASK_PROMPT, "mode": "replace", "edit_null": "empty", "blend": None},
        "blend": {"prompts": [SOURCE_PROMPT, USER_MASK_PROMPT], "words": ["circle"], "threshold": 0.3,
                  "mask_fraction": float(mask.mean())},
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    (out / "edit_fixtures.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
