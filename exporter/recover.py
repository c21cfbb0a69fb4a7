"""Rebuild a model's PyTorch (diffusers) weights from its exported ONNX graphs.

`python -m exporter.recover --model models/shapes-tiny --out out/shapes-tiny` writes a diffusers folder
(unet, vae, text_encoder, tokenizer, scheduler) whose modules compute what the shipped graphs compute, so
the PyTorch reference can run on the very weights the engine runs (benchmarks, reports) without keeping
the training output.

Most initializers keep their parameter names (`unet.conv_in.weight`); the exporter folds the rest into
anonymous constants (`onnx::MatMul_310` is a Linear weight, transposed; GroupNorm scales become Mul
constants). To name those, a copy of the same architecture with a distinct random value in every
parameter is exported the same way: the anonymous names come out identical, and each constant's values
identify its parameter. Only shapes-tiny's architecture is known here (exporter/shapes/models.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from . import graphs, onnx_io
from .configs import Components, save_diffusers
from .shapes import models as M

GRAPHS = {"text_encoder": "text_encoder/model.onnx", "vae_encoder": "vae_encoder/model.onnx",
          "vae_decoder": "vae_decoder/model.onnx", "unet": "unet/model.onnx"}


def _initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _distinct(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _name_map(reference: dict[str, np.ndarray], params: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[str, bool]]:
    """initializer name -> (parameter name, transposed) for the reference export of the distinct copy."""
    out: dict[str, tuple[str, bool]] = {}
    by_size: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, p in params.items():
        by_size.setdefault(p.numel(), []).append((name, p.detach().numpy()))
    for init, value in reference.items():
        if init.startswith(prefix) and init[len(prefix):] in params:
            out[init] = (init[len(prefix):], False)
            continue
        for name, p in by_size.get(value.size, []):
            flat = value.reshape(-1)
            if np.array_equal(flat, p.reshape(-1)):
                out[init] = (name, False)
                break
            if p.ndim == 2 and np.array_equal(flat, p.T.reshape(-1)):
                out[init] = (name, True)
                break
    return out


def _unet_layout(model_dir: Path) -> str:
    """The shapes UNet layout (exporter/shapes/models.py) whose parameters the shipped UNet graph names."""
    graph = onnx.load(str(model_dir / GRAPHS["unet"]), load_external_data=False)
    named = {i.name.removeprefix("unet.") for i in graph.graph.initializer if i.name.startswith("unet.")}
    for layout in M.UNET_LAYOUTS:
        if named <= set(dict(M.build_unet(layout).named_parameters())):
            return layout
    raise SystemExit(f"{model_dir}: its UNet is none of the known shapes layouts ({', '.join(M.UNET_LAYOUTS)})")


def recover(model_dir: Path, out: Path) -> dict:
    manifest = json.loads((model_dir / "nti.json").read_text())
    if manifest.get("name") != "shapes-tiny":
        raise SystemExit(f"{model_dir}: only shapes-tiny's architecture is known to the recovery")
    modules = {"unet": M.build_unet(_unet_layout(model_dir)),
               "vae": M.build_vae(scaling_factor=manifest["vae_scaling_factor"]),
               "text_encoder": M.build_text_encoder()}
    for i, m in enumerate(modules.values()):
        m.eval().requires_grad_(False)
        _distinct(m, 100 + i)
    from .tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir / "tokenizer")
    c = Components(unet=modules["unet"], vae=modules["vae"], text_encoder=modules["text_encoder"], tokenizer=tokenizer,
                   scheduler_config=dict(M.DDIM_CONFIG), image_size=manifest["image_size"], source=str(model_dir),
                   licence=manifest.get("licence", ""), model_name=manifest["name"])
    specs = {Path(s.name).parent.name: s for s in graphs.graph_specs(c, c.image_size)}
    owner = {"text_encoder": ("text_encoder", "text_encoder."), "vae_encoder": ("vae", "vae."),
             "vae_decoder": ("vae", "vae."), "unet": ("unet", "unet.")}
    recovered: dict[str, dict[str, torch.Tensor]] = {k: {} for k in modules}
    with tempfile.TemporaryDirectory() as tmp:
        for key, rel in GRAPHS.items():
            spec = specs[key]
            ref_path = Path(tmp) / rel
            onnx_io.export_module(spec.module, spec.inputs, ref_path, spec.input_names, spec.output_names, spec.dynamic_axes,
                                  opset=manifest["exporter"]["opset"])
            module_key, prefix = owner[key]
            params = dict(modules[module_key].named_parameters())
            names = _name_map(_initializers(ref_path), params, prefix)
            shipped = _initializers(model_dir / rel)
            for init, (pname, transposed) in names.items():
                if init not in shipped:
                    raise SystemExit(f"{rel}: initializer {init} is not in the shipped graph (exported with another torch?)")
                value = torch.from_numpy(shipped[init].copy())
                target = params[pname]
                value = value.reshape(target.T.shape).T if transposed else value.reshape(target.shape)
                recovered[module_key][pname] = value
    missing = {k: sorted(set(dict(m.named_parameters())) - set(recovered[k])) for k, m in modules.items()}
    if any(missing.values()):
        raise SystemExit(f"parameters not found in the graphs: {json.dumps({k: v[:5] for k, v in missing.items() if v})}")
    with torch.no_grad():
        for k, m in modules.items():
            for name, p in m.named_parameters():
                p.copy_(recovered[k][name])
    save_diffusers(c, out, {"recovered_from": str(model_dir)})
    return {k: sum(p.numel() for p in m.parameters()) for k, m in modules.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("models/shapes-tiny"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(recover(args.model, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
