"""The demo's costs on this CPU: one training step and one evaluation batch of the ``demo_shapes``
recipe's detector, in fp32 and bf16 autocast, with 1 and 2 threads, timed alternately; then the top
ops of the fastest training step. The precision a training run with ``amp.dtype: auto`` takes on
this machine is printed beside the table: fp32 where oneDNN has no bf16 kernels, else the faster
2-thread step by ``botnet.engine.amp_choice``'s margin.

    python benchmarks/demo_step.py --rounds 5
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/demo_step.py --rounds 3 --out demo_step_avx2
        # an AVX2-only CPU emulated on a newer one (ATen and oneDNN kernels capped at AVX2)
"""
from __future__ import annotations

import argparse
import tempfile

import torch

import common
from botnet.data.coco import collate_detection
from botnet.data.shapes import make_shapes_dataset
from botnet.detection.config import DetectionConfig
from botnet.detection.task import DetectionTask
from botnet.engine.config import resolve_run_config
from botnet.engine.amp_choice import faster
from botnet.engine.evaluate import resolve_amp


def mask_branch_share(model, training, amp: str, threads: int, args, device) -> str:
    """A training step of the trained detector with and without its mask branch (RoIAlign of the
    mask features, the four convs, the deconv, the loss): once the detector finds the objects, every
    positive RoI (up to a quarter of the sampled ones) trains the mask head."""
    heads = model.roi_heads
    parts = (heads.mask_roi_pool, heads.mask_head, heads.mask_predictor)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[amp]
    with_masks = training(dtype, threads)

    def without():
        heads.mask_roi_pool = heads.mask_head = heads.mask_predictor = None
        try:
            with_masks()
        finally:
            heads.mask_roi_pool, heads.mask_head, heads.mask_predictor = parts

    samples = common.alternate({"with masks": with_masks, "without the mask branch": without}, args.rounds,
                               args.warmup, device)
    med = {k: common.median_ms(v) for k, v in samples.items()}
    share = 1 - med["without the mask branch"] / med["with masks"]
    return (f"**the mask branch in a late training step** (weights `{args.weights}`, {amp}, "
            f"{threads} threads; median of {args.rounds} alternating rounds)\n\n"
            + common.markdown_table(["step", "ms"], [[k, v] for k, v in med.items()])
            + f"\n\nmask branch: {100 * share:.0f} % of the step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default="demo_step", help="report name under results/ (default demo_step)")
    p.add_argument("--weights", help="a trained demo model (botnet-demo/run/model.safetensors): time the steps "
                                     "late in training, and the mask branch's share of a training step")
    args = p.parse_args()
    device = torch.device("cpu")
    info = common.machine(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_shapes_dataset(tmp, train=16, val=16, img_size=128, seed=0)
        cfg = resolve_run_config(DetectionConfig, "demo_shapes", [
            f"data.train_images={paths['train_images']}", f"data.train_ann={paths['train_ann']}",
            f"data.val_images={paths['val_images']}", f"data.val_ann={paths['val_ann']}"])
        task = DetectionTask.for_training(cfg)
        train_set, val_set = task.build_datasets()
        torch.manual_seed(0)
        model = task.build_model().to(memory_format=torch.channels_last)
        if args.weights:
            from safetensors.torch import load_file
            model.load_state_dict(load_file(args.weights))
        train_batch = collate_detection([train_set[i] for i in range(cfg.train.batch_size)])
        val_batch = collate_detection([val_set[i] for i in range(cfg.eval.batch_size)])

        def training(dtype, threads):
            def step():
                torch.set_num_threads(threads)
                model.train()
                with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                    loss = task.training_step(model, train_batch, device)["loss"]
                loss.backward()
                model.zero_grad(set_to_none=True)
            return step

        def evaluation(dtype, threads):
            def step():
                torch.set_num_threads(threads)
                model.eval()
                with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                    model([im.float().div(255) for im in val_batch[0]])
            return step

        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
        fns = {f"{kind} {name} {threads}": make(dtype, threads)
               for kind, make in (("train step", training), ("eval batch", evaluation))
               for name, dtype in dtypes.items() for threads in (1, 2)}
        samples = common.alternate(fns, args.rounds, args.warmup, device)
        med = {k: common.median_ms(v) for k, v in samples.items()}
        rows = []
        for kind in ("train step", "eval batch"):
            base = med[f"{kind} fp32 2"]
            rows += [[kind, name, threads, med[f"{kind} {name} {threads}"], med[f"{kind} {name} {threads}"] / base]
                     for name in dtypes for threads in (1, 2)]
        best = min((k for k in med if k.startswith("train step")), key=med.get)
        auto = resolve_amp(device, "auto")
        if auto == "bf16":  # a training run measures on such a CPU (botnet.engine.amp_choice)
            auto = faster({name: med[f"train step {name} 2"] for name in dtypes})
        sections = [
            f"**demo_shapes recipe**: training step of batch {cfg.train.batch_size}, evaluation batch of "
            f"{cfg.eval.batch_size}, 128 x 128 canvas; median of {args.rounds} alternating rounds (wall clock). "
            f"CPU capability: {torch.backends.cpu.get_cpu_capability()}; `amp.dtype: auto` picks "
            f"**{auto}** here.\n\n"
            + common.markdown_table(["what", "precision", "threads", "ms", "/ fp32 2 threads"], rows),
            f"**top ops of the fastest training step** ({best})\n\n" + common.top_ops_table(fns[best], args.top)]
        if args.weights:
            sections.append(mask_branch_share(model, training, auto, info["threads"], args, device))
        common.write_report(args.out, "The demo's training step and evaluation batch", info, sections,
                            {"median_ms": med, "samples_s": samples})


if __name__ == "__main__":
    main()
