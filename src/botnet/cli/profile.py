"""``botnet profile``: parameters, multiply-adds, latency and throughput."""
from __future__ import annotations

import torch

from botnet.cli.names import add_batch_size, add_img_size
from botnet.engine.config_validate import image_side, positive_int
from botnet.models import create_model, get_model_config
from botnet.profile import count_macs, count_params, paper_table, time_model


def register(cli) -> None:
    p = cli.command("profile", "params, multiply-adds, latency and throughput of a model (or --paper)")
    p.add_argument("model", nargs="?", help="model name (see `botnet models`)")
    add_img_size(p, "input side S, or H W (default: the model's)", old=("--size",), type=image_side, nargs="+",
                 metavar="S")
    add_batch_size(p, "images per timed step (default 1)", old=("--batch",), type=positive_int, default=1)
    p.add_argument("--iters", type=positive_int, default=3, help="timed iterations (median reported)")
    p.add_argument("--backbone", action="store_true", help="c1..c5 only (forward_features)")
    p.add_argument("--train", action="store_true", help="also time forward+backward")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--paper", action="store_true", help="every paper model's params and multiply-adds vs the paper")
    p.add_argument("--timm", action="store_true", help="timm's BoTNets: our params and multiply-adds beside timm's")
    p.set_defaults(func=run)


def _pct(ours: float, paper: float | None) -> str:
    return f"{100 * (ours - paper) / paper:+.2f}%" if paper else "-"


def run(args) -> int:
    if args.timm:
        from botnet.profile_timm import format_timm_table, timm_table

        print("\n".join(format_timm_table(timm_table())))
        return 0
    if args.paper:
        print(f"{'model':18s} {'input':>5s} {'params M':>9s} {'paper':>6s} {'diff':>7s}   "
              f"{'G M.Adds':>9s} {'paper':>7s} {'diff':>7s}  counted")
        for r in paper_table():
            print(f"{r['model']:18s} {r['input']:5d} {r['params_m']:9.2f} {r['paper_params_m']:6.1f} "
                  f"{_pct(r['params_m'], r['paper_params_m']):>7s}   {r['gmacs']:9.2f} "
                  f"{r['paper_gmacs'] if r['paper_gmacs'] else '-':>7} {_pct(r['gmacs'], r['paper_gmacs']):>7s}  "
                  f"{'backbone' if r['backbone_only'] else 'whole model'}")
        print("params include the 1000-way classifier; M.Adds = multiply-adds (the paper's 'FLOPs').")
        return 0
    if not args.model:
        raise SystemExit("botnet profile: give a MODEL or --paper")
    cfg = get_model_config(args.model)
    size = tuple(args.img_size) if args.img_size else cfg.img_size
    if len(size) == 1:
        size = (size[0], size[0])
    model = create_model(args.model)
    params = count_params(model)
    macs = count_macs(model, size, batch=1, backbone_only=args.backbone)
    device = torch.device(args.device)
    print(f"{args.model}: input {size[0]}x{size[1]}, batch {args.batch_size}, device {device}"
          f"{' (backbone only)' if args.backbone else ''}")
    print(f"  params        {params / 1e6:.2f} M")
    print(f"  multiply-adds {macs / 1e9:.2f} G per image")
    dtypes = [torch.float32, torch.bfloat16]
    modes = [False, True] if args.train else [False]
    for train in modes:
        for dtype in dtypes:
            t = time_model(model, size, args.batch_size, dtype, train=train, device=device, iters=args.iters,
                           backbone_only=args.backbone)
            print(f"  {t.mode:5s} {t.dtype:8s} latency {t.latency_ms:9.1f} ms   throughput {t.images_per_s:8.2f} img/s")
    return 0
