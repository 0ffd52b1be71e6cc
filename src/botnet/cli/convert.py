"""``botnet convert``: torchvision / timm weights (a file or a named source) to our safetensors format."""
from __future__ import annotations

from botnet.cli.names import add_img_size, add_set
from botnet.weights.builder import convert_weights
from botnet.weights.convert import SOURCES
from botnet.engine.config_validate import flag_type, image_side
from botnet.limits import MAX_CLASSES, between
from botnet.errors import UserError


def _option(text: str) -> tuple[str, object]:
    """``key=value`` with a YAML-typed value (``bot_shortcut_act=false``, ``layers=[2,2,2,2]``)."""
    from botnet.reading import load_yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--set takes KEY=VALUE, got {text!r}")
    return key.strip(), load_yaml(value, f"--set {text!r}")


def register(cli) -> None:
    p = cli.command("convert", "convert torchvision / timm weights to botnet safetensors")
    p.add_argument("src", metavar="WEIGHTS", help="a .pth / .pt / .safetensors state dict, or a source: "
                   "timm:botnet26t_256.c1_in1k, torchvision:ResNet50_Weights.IMAGENET1K_V2 (see docs/pretrained.md)")
    p.add_argument("--model", required=True, metavar="NAME", help="registered model to fill (botnet models lists them)")
    p.add_argument("--out", required=True, metavar="FILE", help="safetensors file to write")
    p.add_argument("--from", dest="source", choices=SOURCES, default="auto",
                   help="layout: timm (timm's ResNets and BoTNets), torchvision (torchvision's ResNets, our files) "
                        "or auto (default: recognised from the keys)")
    p.add_argument("--num-classes", type=flag_type(int, between(0, MAX_CLASSES)), metavar="N",
                   help="classifier size (default: the checkpoint's; 0: no classifier)")
    p.add_argument("--classes", metavar="FILE", help="text file of class names, one per line "
                   "(default: the ImageNet names for 1000 classes)")
    add_img_size(p, "input side S, or H W (sizes the attention tables)", type=image_side, nargs="+", metavar="S")
    add_set(p, "a model config field, repeatable (e.g. --set layers=[2,2,2,2])", old=("--option",), type=_option)
    p.add_argument("--scale-pos-embed", action="store_true",
                   help="the timm model's BottleneckAttn was built with scale_pos_embed=True (not timm's "
                        "default); its tables are rescaled for it")
    p.add_argument("--strict", action="store_true", help="fail unless every tensor of the model is in the checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    class_names = None
    if args.classes:
        from botnet.reading import read_text

        text = read_text(args.classes, "class names file")
        class_names = [line.strip() for line in text.splitlines() if line.strip()]
    size = args.img_size
    if size is not None and len(size) not in (1, 2):
        raise UserError(f"--img-size takes S or H W, got {len(size)} numbers")
    report = convert_weights(
        args.src, args.out, args.model, source=args.source, num_classes=args.num_classes,
        class_names=class_names, img_size=None if size is None else tuple(size) * (3 - len(size)),
        scale_pos_embed=args.scale_pos_embed, strict=args.strict, **dict(args.overrides),
    )
    print(f"wrote {args.out}: {report.summary()}")
    return 0
