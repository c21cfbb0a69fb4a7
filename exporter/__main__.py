"""`python -m exporter export|random ...`: write an ONNX model folder for the engine (docs/design.md §2)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .precision import DEFAULT_GRAD_PRECISION, GRAD_PRECISIONS


#: what `export --from` reads as a single-file checkpoint (exporter/single_file.py SUFFIXES)
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--fp16", action="store_true", help="float16 text encoder and UNets, for GPU use")
    p.add_argument("--grad-precision", choices=GRAD_PRECISIONS, default=DEFAULT_GRAD_PRECISION,
                   help="under --fp16, the null-text gradient graph's precision; float16-weights (the default) reads "
                        "the UNet's float16 weights and computes in float32: one copy of the weights, and the gradient's "
                        "direction kept (cosine >= 0.999 to float32's; a float16 backward falls to 0.4 at the last "
                        "steps; python -m exporter.grad_precision measures it)")
    p.add_argument("--skip-grad", action="store_true", help="leave out unet/null_text_grad.onnx (no null-text)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def regenerate_all_fixtures() -> int:
    """Every fixture the node tests read: the tiny model and its parity fixtures first (the other generators start
    from its weights and stored pivots), then every `exporter/*_fixtures.py` module's `main`, by name, so a new
    generator needs no entry here."""
    import importlib

    from .fixtures import write

    if not Path("test/fixtures").is_dir():
        raise SystemExit("run from the repository root (test/fixtures/ not found)")
    steps = [
        ("test/fixtures/tiny (model and parity)", lambda: write(Path("test/fixtures/tiny"), "tiny", 0)),
        ("test/fixtures/sd21-tiny (SD 2.x features: model and parity)", lambda: write(Path("test/fixtures/sd21-tiny"), "sd21-tiny", 0)),
    ]
    for module in sorted(Path(__file__).parent.glob("*_fixtures.py")):
        steps.append((module.stem, importlib.import_module(f".{module.stem}", __package__).main))
    for name, run in steps:
        started = time.perf_counter()
        run()
        print(f"wrote {name} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .configs import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="python -m exporter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_exp = sub.add_parser("export", help="export a diffusers folder, a hub id, or a single-file checkpoint")
    p_exp.add_argument("--from", dest="source", required=True,
                       help="local diffusers folder, hub id, or a .safetensors/.ckpt in the original SD layout")
    g = p_exp.add_argument_group("single-file checkpoints (exporter/single_file.py; read offline)")
    g.add_argument("--family", choices=["sd1", "sd2"], help="override the family detected from the weights")
    g.add_argument("--config", dest="arch", choices=sorted(ARCHITECTURES),
                   help="the architecture (default: the shipped config of the family the UNet's widths match)")
    g.add_argument("--prediction-type", choices=["epsilon", "v_prediction"],
                   help="default: the checkpoint's metadata, else the config's (SD 2.x 768 px: v_prediction)")
    g.add_argument("--clip-skip", type=int, help="read the text encoder this many layers from the end "
                                                   "(A1111's clip skip; default: the metadata's, else 1)")
    _common(p_exp)
    p_rand = sub.add_parser("random", help="export a randomly initialised model of a named architecture")
    p_rand.add_argument("--config", required=True, choices=sorted(ARCHITECTURES))
    p_rand.add_argument("--seed", type=int, default=0)
    p_rand.add_argument("--diffusers-out", type=Path,
                        help="also save the random weights as a diffusers folder (for the PyTorch reference)")
    _common(p_rand)
    p_fix = sub.add_parser("fixtures", help="export the tiny model and write reference parity fixtures")
    p_fix.add_argument("--out", required=True, type=Path)
    p_fix.add_argument("--config", default="tiny", choices=sorted(ARCHITECTURES))
    p_fix.add_argument("--seed", type=int, default=0)
    sub.add_parser("fixtures-all", help="regenerate every committed fixture of the engine's tests, in place (run from the repository root)")
    p_time = sub.add_parser("time", help="onnxruntime CPU time of one UNet forward and one gradient call")
    p_time.add_argument("--model", required=True, type=Path)
    p_time.add_argument("--repeats", type=int, default=3)
    p_time.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    p_time.add_argument("--reference-config", choices=sorted(ARCHITECTURES),
                        help="also time the PyTorch reference on this config's random weights (the folder must be "
                             "`random --config` of the same config and --seed)")
    p_time.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "time":
        from .timing import time_model

        if not (args.model / "nti.json").exists():
            raise SystemExit(f"{args.model}: no nti.json (not a model folder written by the exporter)")
        result = time_model(args.model, args.repeats, args.threads)
        if args.reference_config:
            from .timing import time_reference

            result |= time_reference(args.reference_config, args.seed, args.repeats)
            result["engine_speedup_forward"] = round(result["reference_unet_batch1_s"] / result["unet_batch1_s"], 2)
            result["engine_speedup_gradient"] = round(result["reference_null_text_grad_s"] / result["null_text_grad_s"], 2)
        print(json.dumps(result, indent=2))
        return 0

    if args.command == "fixtures-all":
        return regenerate_all_fixtures()

    if args.command == "fixtures":
        from .fixtures import write

        meta = write(args.out, args.config, args.seed)
        print(f"wrote fixtures to {args.out} (reference {meta['reference_seconds']}s, "
              f"reconstruction {meta['reconstruction_psnr_vs_image']:.1f} dB)", file=sys.stderr)
        return 0

    from .configs import build_random
    from .export import export_components, load_diffusers
    from .peak_memory import peak_rss_bytes

    if args.command == "export" and Path(args.source).suffix in SINGLE_FILE_SUFFIXES:
        from .single_file import load_single_file

        components = load_single_file(Path(args.source), family=args.family, config=args.arch,
                                      prediction_type=args.prediction_type, clip_skip=args.clip_skip)
    elif args.command == "export":
        components = load_diffusers(args.source)
    else:
        components = build_random(args.config, args.seed)
    manifest = export_components(components, args.out, opset=args.opset, fp16=args.fp16,
                                 grad_precision=args.grad_precision, skip_grad=args.skip_grad, force=args.force,
                                 quiet=args.quiet)
    if args.command == "random" and args.diffusers_out:
        from .configs import save_diffusers

        save_diffusers(components, args.diffusers_out, {"random": args.config, "seed": args.seed})
    peak = peak_rss_bytes()
    sizes = {k: v["bytes"] for k, v in manifest["files"].items()}
    summary = {"out": str(args.out), "seconds": manifest["export_seconds"],
               "peak_rss_mb": None if peak is None else round(peak / 2**20),
               "bytes": sum(sizes.values()), "files": sizes, "stage_seconds": manifest["exporter"]["stage_seconds"],
               "stage_peak_rss_mb": {k: round(v / 2**20) for k, v in manifest["stage_peak_bytes"].items()}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        memory = "" if peak is None else f", peak memory {summary['peak_rss_mb']} MB"
        print(f"wrote {args.out} ({summary['bytes'] / 1e6:.1f} MB) in {summary['seconds']}s{memory}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
