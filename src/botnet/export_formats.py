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


def write_onnx_detector(wrapper, example, tmp: Path, outputs, opset: int, meta_json: str):
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python scalars in torchvision's code
        torch.onnx.export(
            wrapper, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=["images"],
            output_names=list(outputs), dynamic_axes={name: {0: "detections"} for name in outputs},
        )
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "botnet", meta_json
    onnx.save(proto, str(tmp))
