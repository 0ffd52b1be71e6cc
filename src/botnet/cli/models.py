"""``botnet models``: the registered model names."""
from __future__ import annotations

from botnet.models import get_model_config, list_models


def register(cli) -> None:
    p = cli.command("models", "list the registered models")
    p.add_argument("pattern", nargs="?", help="glob filter, e.g. 'botnet_s1_*'")
    p.set_defaults(func=run)


def run(args) -> int:
    for name in list_models(args.pattern):
        cfg = get_model_config(name)
        print(f"{name:18s} {cfg.input_size[0]}x{cfg.input_size[1]:<5d} {cfg.description}")
    return 0
