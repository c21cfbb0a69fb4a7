"""Writes the sample images bundled in media/samples/ (held-out shapes scenes, larger than the model size,
so the demo also shows the resize): `python -m exporter.shapes.samples --out media/samples`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from . import scenes as S

SAMPLES = {  # file stem -> index among the held-out scenes with that many objects
    "two-shapes": (2, 3),
    "one-shape": (1, 0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="media/samples")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held = S.split_scenes("heldout", 40)
    index = {}
    for stem, (n, k) in SAMPLES.items():
        scene = [s for s in held if len(s.objects) == n][k]
        scale = args.size / scene.size
        big = S.Scene(tuple(S.Obj(o.shape, o.colour, (o.centre[0] * scale, o.centre[1] * scale), o.size * scale)
                            for o in scene.objects), scene.background, args.size)
        Image.fromarray(S.render(big)).save(out / f"{stem}.png")
        index[f"{stem}.png"] = S.prompt_for(scene)
    (out / "prompts.json").write_text(json.dumps(index, indent=2) + "\n")
    print(json.dumps(index, indent=2))


if __name__ == "__main__":
    main()
