"""How each export format is written: the dynamic axes, ONNX through the dynamo exporter (or the
TorchScript-based one for detectors, whose NMS torch.export cannot trace), ExportedPrograms, and
the model's metadata carried in the ONNX file."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from botnet.errors import UserError
from botnet.export_check import MAX_DYNAMIC_SIZE, MIN_DYNAMIC_SIZE, SIZE_MULTIPLE
MAX_DYNAMIC_BATCH = 1024


#: the names of the dynamic axes of the ``images`` input, in the ONNX file and in what is printed
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


def dynamic_shapes():
    blocks = dict(min=MIN_DYNAMIC_SIZE // SIZE_MULTIPLE, max=MAX_DYNAMIC_SIZE // SIZE_MULTIPLE)
    height = SIZE_MULTIPLE * torch.export.Dim("height_blocks", **blocks)
    width = SIZE_MULTIPLE * torch.export.Dim("width_blocks", **blocks)
    batch = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
    return {"images": {0: batch, 2: height, 3: width}}


def require_onnx() -> None:
    """ONNX export needs packages that are an optional extra: say so before any work is done."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: pip install 'botnet[export]'")


def onnx_metadata(task: str, meta: Mapping[str, Any], outputs: Sequence[str]) -> str:
    keep = ("model", "config", "num_classes", "class_names", "img_size", "crop_pct", "mean", "std",
            "canvas", "cat_ids", "detector", "random_weights")
    info = {k: meta[k] for k in keep if k in meta}
    info.update(task=task, outputs=list(outputs))
    return json.dumps(info)


def export_program(wrapper, example, dynamic: bool) -> torch.export.ExportedProgram:
    # without autograd: the graph is the inference computation (layers may take other code
    # paths when gradients are wanted, e.g. the attention's training kernel)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(wrapper, (example,), dynamic_shapes=dynamic_shapes() if dynamic else None)


def write_onnx_dynamo(wrapper, example, tmp: Path, dynamic: bool, outputs, opset: int, meta_json: str):
    program = export_program(wrapper, example, dynamic)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(program, (example,), dynamo=True, input_names=["images"],
                                    output_names=list(outputs), opset_version=opset, verbose=False)
    program.model.metadata_props["botnet"] = meta_json
    program.save(str(tmp), external_data=False)
    if dynamic:
        name_dynamic_axes(tmp)


def name_dynamic_axes(path: Path) -> None:
    """Give the input's dynamic axes the names of :data:`DYNAMIC_AXES` throughout the file.

    The exporter names each axis after its symbol (``s34``, ``32*s75``); outputs and intermediate
    values that share an input axis carry the same text, so each is replaced wherever it occurs
    and a reader of the file sees ``batch`` on ``logits`` as on ``images``."""
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    rename = {dims[i].dim_param: name for i, name in DYNAMIC_AXES.items() if dims[i].dim_param}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if not value.type.HasField("tensor_type"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    onnx.save(proto, str(path))


def write_onnx_detector(wrapper, example, tmp: Path, outputs, opset: int, meta_json: str):
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python scalars in torchvision's code
        torch.onnx.export(
            wrapper, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=["images"],
            output_names=list(outputs), dynamic_axes={name: {0: "detections"} for name in outputs},
        )
    proto = onnx.load(str(tmp))
    free_growing_loop_axes(proto.graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "botnet", meta_json
    onnx.save(proto, str(tmp))


def free_growing_loop_axes(graph) -> None:
    """Declare the axes that an ONNX ``Loop`` grows as symbolic (``appended``), in ``graph`` and
    its subgraphs.

    torchvision pastes a detector's masks in a ``Loop`` that appends one (1, C, C) mask per
    detection to a tensor that starts empty, (0, C, C). The TorchScript exporter declares the
    loop-carried value with the empty start's size 0, so onnxruntime's check of each iteration's
    output (``VerifyOutputSizes``) logged a warning per detection on every call."""
    import onnx

    for node in graph.node:
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            if node.op_type == "Loop":
                for carried in attr.g.input[2:]:  # after the iteration count and the condition
                    for dim in carried.type.tensor_type.shape.dim:
                        if dim.HasField("dim_value") and dim.dim_value == 0:
                            dim.dim_param = "appended"
            free_growing_loop_axes(attr.g)
