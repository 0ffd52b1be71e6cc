"""``botnet models``: the registered model names (and what ``--weights imagenet`` loads into each)."""
from __future__ import annotations

from botnet.models import get_model_config, list_models


def register(cli) -> None:
    p = cli.command("models", "list the registered models")
    p.add_argument("pattern", nargs="?", help="glob filter, e.g. 'botnet_s1_*'")
    p.set_defaults(func=run)


def run(args) -> int:
    from botnet.weights.pretrained import imagenet_source_for

    for name in list_models(args.pattern):
        cfg = get_model_config(name)
        source = imagenet_source_for(name)
        size = f"{cfg.img_size[0]}x{cfg.img_size[1]}"
        line = f"{name:20s} {size:10s} {cfg.description}"
        print(line + (f"  [imagenet = {source}]" if source else ""))
    return 0
