"""Float16 export (--fp16): which graph gets which precision, and the conversion."""

from __future__ import annotations

import math
from pathlib import Path

# Graphs kept in float32 under --fp16: SD's VAE overflows in fp16 (the "black images" of the reference code).
FP32_ALWAYS = {"vae_encoder", "vae_decoder"}

#: what --grad-precision may ask of the gradient graph under --fp16 (exporter/grad_precision.py measures each)
GRAD_PRECISIONS = ("float32", "float16-weights", "float16")
DEFAULT_GRAD_PRECISION = "float16-weights"


def convert_precision(path: Path, precision: str) -> None:
    """Rewrite the float32 graph at `path` in `precision`, its inputs and outputs left float32 (the engine feeds
    and reads float32 whatever the graph computes in):
    - "float16": weights and arithmetic in float16;
    - "float16-weights": every weight of 1 KB or more stored in float16 and cast up to float32 as it is read,
      arithmetic in float32: the same bytes as the "float16" UNet's weights, so the two share one file."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16, convert_tensor_float_to_float16

    from .onnx_io import SHARED_MIN_BYTES, save_model

    model = onnx.load(str(path))
    if precision == "float16":
        # Resize takes its roi/scales as float32 whatever the data type: keep those constants as they are.
        producers = {o: n for n in model.graph.node for o in n.output}
        keep = set()
        for n in model.graph.node:
            if n.op_type == "Resize":
                for name in n.input[1:3]:
                    if name in producers:
                        keep.add(producers[name].name)
        # A LayerNormalization that also returns its mean and inverse deviation (the gradient graph's, for the
        # backward) is typed wrongly by the converter: those stay float32 (as mixed-precision training keeps
        # its norms).
        keep |= {n.name for n in model.graph.node if n.op_type == "LayerNormalization" and len(n.output) > 1}
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                         node_block_list=sorted(keep))
        _drop_repeated_casts(model)
    elif precision == "float16-weights":
        casts = []
        for t in model.graph.initializer:
            if t.data_type == onnx.TensorProto.FLOAT and 4 * math.prod(t.dims) >= SHARED_MIN_BYTES:
                name = t.name
                convert_tensor_float_to_float16(t)  # the converter's own rounding: byte-identical weights
                t.name = f"{name}.float16"
                casts.append(onnx.helper.make_node("Cast", [t.name], [name], name=f"{name}.to_float32",
                                                   to=onnx.TensorProto.FLOAT))
        nodes = casts + list(model.graph.node)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    elif precision != "float32":
        raise ValueError(f"unknown precision {precision!r} (one of {', '.join(GRAD_PRECISIONS)})")
    save_model(model, path)


def _drop_repeated_casts(model) -> None:
    """The converter gives a weight that two kept-float32 nodes read one Cast each, with the same name and
    output (sd15-256's gradient graph: "two nodes with same node name"); one is enough."""
    seen, nodes = set(), []
    for n in model.graph.node:
        key = n.SerializeToString()
        if n.op_type == "Cast" and key in seen:
            continue
        seen.add(key)
        nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def graph_precision(key: str, fp16: bool, grad_precision: str) -> str:
    if not fp16 or key in FP32_ALWAYS:
        return "float32"
    return grad_precision if key == "null_text_grad" else "float16"
