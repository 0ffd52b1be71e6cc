"""``botnet export``: a classifier, a backbone or a detector to ONNX or torch.export."""
from __future__ import annotations

import sys

from botnet.cli.names import add_img_size
from botnet.engine.config_validate import flag_type, image_side, num_classes_int
from botnet.errors import UserError
from botnet.export import FORMATS, OPSET_RANGE, ExportCheckError, export_model


def register(cli) -> None:
    p = cli.command("export", "export a model to ONNX or torch.export (.pt2) for deployment")
    p.add_argument("source", metavar="MODEL_OR_WEIGHTS",
                   help="a weights file (.safetensors from training or `botnet convert`) or a registered "
                        "model name (random weights: to try the deployment path)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (default) or torch (an ExportedProgram, torch.export.save; name it .pt2)")
    p.add_argument("--out", required=True, metavar="FILE", help="file to write")
    add_img_size(p, "input side S, or height and width H W, of the export (default: the model's input size; "
                    "detectors: their canvas)", old=("--size",), nargs="+", type=image_side, metavar="S")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch, height and width (multiples of 32 from 64 to 4096; without --img-size the "
                        "export runs at the smallest such size not below the model's)")
    p.add_argument("--features", action="store_true",
                   help="export the backbone's c2..c5 feature maps instead of the classifier")
    p.add_argument("--model", metavar="NAME",
                   help="architecture of a weights file that does not describe itself (checked against one that does)")
    p.add_argument("--num-classes", type=num_classes_int, metavar="N", help="classifier size for a bare model name (default 1000)")
    p.add_argument("--opset", type=flag_type(int, OPSET_RANGE),
                   help="ONNX opset (default 18, from 18 to 23; detectors 17, from 11 to 17)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the exported graph against PyTorch before writing it")
    p.set_defaults(func=run)


def run(args) -> int:
    size = args.img_size
    if size is not None and len(size) not in (1, 2):
        raise UserError(f"--img-size takes S or H W, got {len(size)} numbers")
    if size is not None:
        size = tuple(size) * (3 - len(size))  # S means S x S
    try:
        result = export_model(
            args.source, args.out, format=args.format, img_size=size, dynamic=args.dynamic,
            features=args.features, model=args.model, num_classes=args.num_classes, opset=args.opset,
            check=not args.no_check, say=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except ExportCheckError as e:
        print(f"botnet: error: {e}; nothing was written", file=sys.stderr)
        return 1
    print(result.summary())
    return 0
