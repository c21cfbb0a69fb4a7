"""Writing ONNX files and describing their inputs/outputs for the manifest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

# Above this many bytes of weights a graph keeps them in `model.onnx.data` (ONNX external data): protobuf
# caps a file at 2 GB, and small graphs are simpler to ship as one file.
EXTERNAL_DATA_BYTES = 200 * 1024 * 1024
#: tensors from this size on go to the shared weights file; smaller ones stay inside their graph
SHARED_MIN_BYTES = 1024

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.DOUBLE: "float64",
}


def _weight_bytes(obj) -> int:
    if isinstance(obj, torch.export.ExportedProgram):
        tensors = list(obj.state_dict.values()) + list(getattr(obj, "constants", {}).values())
    else:
        tensors = list(obj.parameters()) + list(obj.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _finish(onnx_program, path: Path, external: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    for stale in (path, data):
        if stale.exists():
            stale.unlink()
    onnx_program.save(str(path), external_data=external)


def export_program(ep, path, input_names, output_names, opset: int = 18) -> None:
    """Export a torch.export program (static shapes) with the given I/O names."""
    path = Path(path)
    external = _weight_bytes(ep) > EXTERNAL_DATA_BYTES
    with _without_rewrite_rule("SlicesSplit"):
        prog = torch.onnx.export(ep, (), None, dynamo=True, opset_version=opset, input_names=input_names,
                                 output_names=output_names, optimize=True, verbose=False)
    _finish(prog, path, external)


@contextlib.contextmanager
def _without_rewrite_rule(name: str):
    """Leave one rule out of onnxscript's default rewrite rules for the duration.

    SlicesSplit is the only default rule with two output nodes, and onnxscript matches such a pattern by
    trying every pair of candidate nodes: on the gradient graph (about 9,000 nodes before optimization) it
    was most of the export's time (at SD 1.5's size, minutes), and it rewrote nothing there.
    """
    from onnxscript import rewriter

    rules = rewriter._DEFAULT_REWRITE_RULES
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in rules if r.name != name)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


def export_module(module, args, path, input_names, output_names, dynamic_axes=None, opset: int = 18) -> None:
    """Export a forward graph with the TorchScript exporter.

    The forward graphs need symbolic batch sizes with relations between inputs (2K samples, K-1 mappers,
    K reweight rows for the control UNet), which torch.export's symbolic shapes reject for the P2P
    reshapes; the TorchScript exporter traces them with dynamic axes directly, in a second.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The tracer runs the module once on the example inputs; the output shapes are read there rather than
    # by a second forward pass (at SD 1.5 512 px the control UNet's batch of 6 costs about a minute).
    shapes: list[tuple[int, ...]] = []

    def record(_module, _args, outs):
        shapes[:] = [tuple(int(d) for d in o.shape) for o in (outs if isinstance(outs, tuple) else (outs,))]

    hook = module.register_forward_hook(record)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            raw = Path(tmp) / "raw.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, tuple(args), str(raw), dynamo=False, opset_version=opset,
                                  input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)
            model = onnx.load(str(raw))
    finally:
        hook.remove()
    if len(shapes) != len(model.graph.output):
        raise RuntimeError(f"{path.name}: the trace gave {len(shapes)} output shapes for "
                           f"{len(model.graph.output)} outputs")
    _name_output_dims(model, shapes, dynamic_axes or {})
    save_model(model, path)


def _name_output_dims(model: onnx.ModelProto, shapes, dynamic_axes: dict) -> None:
    """Declare output shapes plainly (the tracer names them after internal nodes)."""
    for out, shape in zip(model.graph.output, shapes):
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        axes = dynamic_axes.get(out.name, {})
        for i, size in enumerate(shape):
            d = dims.add()
            if i in axes:
                d.dim_param = axes[i]
            else:
                d.dim_value = size


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save one graph file, with its weights in `<name>.data` when they are large."""
    external = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    data = path.with_name(path.name + ".data")
    for stale in (path, data):
        if stale.exists():
            stale.unlink()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


#: offsets of the shared weights file are multiples of this, so the runtime may map tensors without copying
WEIGHTS_ALIGNMENT = 4096


def share_external_data(folder: Path, graph_files: list[str], store: str) -> dict[str, int]:
    """Rewrite the graphs in `folder` so that all their weights (tensors of 1 KB and more) live once in
    `folder/store`: a tensor two graphs hold with the same dtype, shape and bytes is written once, at a
    WEIGHTS_ALIGNMENT-aligned offset. The graphs are read without their external data and each tensor is
    copied on its own (an SD UNet is 3.4 GB a graph); their old data files are removed. Returns the bytes the
    graphs held and the bytes written."""
    from onnx import numpy_helper

    offsets: dict[str, int] = {}
    held = 0
    with open(folder / store, "wb") as blob:
        for name in graph_files:
            path = folder / name
            model = onnx.load(str(path), load_external_data=False)
            old_files: set[str] = set()
            for t in model.graph.initializer:
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    info = {e.key: e.value for e in t.external_data}
                    old_files.add(info["location"])
                    raw = _read_external(folder / info["location"], int(info.get("offset", 0)), info.get("length"))
                else:
                    raw = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
                if len(raw) < SHARED_MIN_BYTES:
                    if t.data_location == onnx.TensorProto.EXTERNAL:  # small, but kept outside: bring it in
                        del t.external_data[:]
                        t.data_location = onnx.TensorProto.DEFAULT
                        t.raw_data = raw
                    continue
                length = len(raw)
                held += length
                key = hashlib.sha256(t.data_type.to_bytes(4, "little") + repr(list(t.dims)).encode() + raw).hexdigest()
                if key not in offsets:
                    blob.write(b"\0" * (-blob.tell() % WEIGHTS_ALIGNMENT))
                    offsets[key] = blob.tell()
                    blob.write(raw)
                del raw
                for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
                    t.ClearField(field)
                del t.external_data[:]
                t.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", store), ("offset", str(offsets[key])), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
            onnx.save_model(model, str(path))
            for old in old_files - {store}:
                (folder / old).unlink(missing_ok=True)
            del model
        written = blob.tell()
    return {"held": held, "written": written}


def _read_external(path: Path, offset: int, length: str | None) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(int(length)) if length is not None else f.read()


def _value_info(v) -> dict:
    t = v.type.tensor_type
    dims = []
    for d in t.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return {"name": v.name, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type)), "shape": dims}


def describe_graph(path) -> dict:
    """Names, dtypes and shapes of a graph's inputs and outputs, read from the file itself."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return {
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in inits],
        "outputs": [_value_info(v) for v in model.graph.output],
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
    }


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_of(path) -> list[Path]:
    """The graph file and its external data file, if any."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return [path] + ([data] if data.exists() else [])


def total_size(path) -> int:
    return sum(os.path.getsize(p) for p in files_of(path))
