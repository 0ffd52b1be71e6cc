"""What the CPU flex path costs on the first call at each map size: its kernel is compiled then.

One MHSA2d (dim 512, 4 heads, inference, fp32) with ``attn_impl="flex"`` and one with the chunked
path (the same weights) run on maps of several sizes in turn, each size twice in the list where
it repeats, with an empty inductor cache (a new temporary ``TORCHINDUCTOR_CACHE_DIR``): the
seconds of each flex call against the chunked path's. This is why ``auto`` takes flex on no CPU
(``cpu_attn_impl`` in ``botnet/layers/attention.py``). Writes ``results/flex_compile[_cuda].md`` and
``.json``. On CUDA, where ``auto`` takes flex for maps from 32 x 32 at head dim 128, the same table
tells what evaluation over photos of many sizes pays there (Triton compiles per size too).

    python benchmarks/flex_compile.py
    python benchmarks/flex_compile.py --device cuda
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

SIZES = ((20, 20), (20, 20), (20, 24), (24, 20), (16, 20), (20, 24))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # before torch reads it
        import torch

        import common
        from botnet.layers import MHSA2d

        device = torch.device(args.device)
        info = common.machine(device)
        torch.manual_seed(0)
        flex = MHSA2d(512, 4, feat_size=(20, 20), attn_impl="flex").eval().to(device)
        chunked = MHSA2d(512, 4, feat_size=(20, 20), attn_impl="chunked").eval().to(device)
        chunked.load_state_dict(flex.state_dict())
        rows, data = [], []
        sizes = SIZES if device.type == "cpu" else tuple((2 * h, 2 * w) for h, w in SIZES)  # flex's sizes there
        for height, width in sizes:
            x = torch.randn(1, 512, height, width, device=device)
            with torch.no_grad():
                common.sync(device)
                started = time.perf_counter()
                a = flex(x)
                common.sync(device)
                flex_s = time.perf_counter() - started
                started = time.perf_counter()
                b = chunked(x)
                common.sync(device)
                chunked_s = time.perf_counter() - started
            error = float((a - b).abs().max())
            rows.append([f"{height} x {width}", flex_s, chunked_s * 1000, f"{error:.1e}"])
            data.append({"size": [height, width], "flex_s": flex_s, "chunked_ms": chunked_s * 1000, "max_diff": error})
    text = ("**first calls**, MHSA2d dim 512, 4 heads, batch 1, inference, fp32, sizes in this order, an empty "
            "inductor cache (wall clock)\n\n"
            + common.markdown_table(["map", "flex s", "chunked ms", "max difference"], rows))
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    common.write_report(f"flex_compile{suffix}", f"The flex path's first call at each map size ({device.type})", info,
                        [text], {"calls": data})


if __name__ == "__main__":
    main()
