"""Planted bugs and the tests that must catch them: the suite's strength, measured.

Each mutant replaces one piece of text (found exactly once in its file) in a temporary copy of the
repository and runs the tests named for it there; a mutant is caught when one of them fails. The
script prints caught / MISSED per mutant and exits 1 on a miss, 2 when the list no longer fits the
code (a text not found exactly once, or named tests that do not pass unmutated).

    python tools/mutants.py                  # every mutant (first the named tests, unmutated)
    python tools/mutants.py --list           # names, files and tests; checks the texts only
    python tools/mutants.py --only exif-5-8-ignored --only ap-keys-swapped
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what the copy leaves out: version control, environments, caches, run outputs
SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", "runs", "build", "dist",
                              "botnet-demo", "out", ".gl", ".whl")
PKG = "src/botnet/"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to src/botnet/
    original: str
    replacement: str
    tests: tuple[str, ...]  # pytest node ids, relative to the repository


def m(name, file, original, replacement, *tests):
    return Mutant(name, file, original, replacement, tuple(tests))


L, A, F = "tests/layers/test_pos_embed.py::", "tests/layers/test_attention_impls.py::", "tests/layers/test_flex_attention.py::"
RESUME = "tests/engine/test_engine_train.py::test_resume_continues_bit_for_bit"
TIMM = "tests/test_pretrained.py::test_timm_botnet_from_the_hf_cache_computes_what_timm_computes"
PRECISION = ("tests/detection/test_precision.py::test_bf16_training_keeps_proposals_and_losses_in_float32",
             "tests/detection/test_precision.py::test_bf16_inference_boxes_match_float32")
STATS = "tests/detection/test_anchors.py::test_data_stats_figures"
POLYGONS = "tests/data/test_coco.py::test_polygons_rasterised_in_their_window_equal_whole_image_rasterising"

MUTANTS = [
    # -- attention maths ------------------------------------------------------------------------
    m("offset-off-by-one", "layers/pos_embed.py", "offsets * step + (native - 1))", "offsets * step + native)",
      L + "test_smaller_map_keeps_same_offsets"),
    m("offset-sign-flipped", "layers/pos_embed.py", "return pos[None, :] - pos[:, None] + (length - 1)",
      "return pos[:, None] - pos[None, :] + (length - 1)", L + "test_relative_logits_1d_index_convention"),
    m("tables-swapped", "layers/chunked_attention.py", "expand_rel_table(layer.rel_h, height).to(qkv.dtype)  # (H, H, d)\n"
      "    table_w = expand_rel_table(layer.rel_w, width)", "expand_rel_table(layer.rel_w, height).to(qkv.dtype)\n"
      "    table_w = expand_rel_table(layer.rel_h, width)", A + "test_forward_matches_reference"),
    m("tables-swapped-per-axis-logits", "layers/pos_embed.py", "rel_table_for_length(rel_w, width))  # (.., H, W, W)\n"
      "    lh = relative_logits_1d(grid.transpose(-2, -3), rel_table_for_length(rel_h, height))",
      "rel_table_for_length(rel_h, width))\n    lh = relative_logits_1d(grid.transpose(-2, -3), "
      "rel_table_for_length(rel_w, height))", L + "test_relative_logits_2d_rows_and_cols"),
    m("position-term-unscaled", "layers/attention.py", "self.pos_scale = self.scale if scale_pos_embed else 1.0",
      "self.pos_scale = 1.0", A + "test_forward_matches_reference"),
    m("chunked-grad-v-one-block", "layers/chunked_attention.py", "grad_v_g += torch.bmm(p.transpose(1, 2), g)",
      "grad_v_g = torch.bmm(p.transpose(1, 2), g)", A + "test_chunked_query_blocks_match_bias_path"),
    m("chunked-grad-k-unscaled", "layers/chunked_attention.py", "_scatter(grad_k, hs, grad_k_g.mul_(scale))",
      "_scatter(grad_k, hs, grad_k_g)", A + "test_gradients_match_reference"),
    m("flex-padding-mask-le", "layers/flex_attention.py", 'return torch.where(kv_idx < keys, score, -float("inf"))',
      'return torch.where(kv_idx <= keys, score, -float("inf"))',
      F + "test_score_mod_adds_the_relative_logits_and_masks_padding"),
    m("flex-products-unscaled", "layers/pos_embed.py", "(q @ (rows * scale).to(q.dtype).t())",
      "(q @ rows.to(q.dtype).t())", F + "test_cuda_gradients_flow_through_the_captured_products"),
    m("fold-ratio-inverted", "layers/sdpa_attention.py", "logits_h * (layer.pos_scale / scale), logits_w * "
      "(layer.pos_scale / scale)", "logits_h * (scale / layer.pos_scale), logits_w * (scale / "
      "layer.pos_scale)", A + "test_unscaled_position_term_matches_timm_default"),
    m("fold-onehots-swapped", "layers/pos_embed.py", "torch.cat([rows, cols], dim=1)", "torch.cat([cols, rows], dim=1)",
      L + "test_key_onehots"),
    m("table-floor-not-linear", "layers/pos_embed.py", "return table[lo] * (1 - frac) + table[hi] * frac",
      "return table[lo]", L + "test_larger_map_interpolates_with_pinned_ends"),
    m("small-map-stretched-table", "layers/pos_embed.py", "offsets[-1:].clamp(min=1)).clamp(max=1.0)",
      "offsets[-1:].clamp(min=1))", L + "test_smaller_map_keeps_same_offsets"),
    m("traced-export-chunked", "layers/attention.py", 'return "bias"\n        device = qkv.device.type',
      'return "chunked"\n        device = qkv.device.type',
      "tests/deploy/test_export.py::test_attention_follows_its_input_through_the_torchscript_exporter"),
    # -- model ----------------------------------------------------------------------------------
    m("last-bn-not-zeroed", "layers/blocks.py", 'if zero_init_last and getattr(self.bn3, "weight", None) is not None:',
      "if False:", "tests/models/test_models.py::test_structure_follows_spec"),
    m("pool-before-mhsa", "layers/blocks.py", "return self.pool(self.attn(x))", "return self.attn(self.pool(x))", TIMM),
    # -- weights --------------------------------------------------------------------------------
    m("timm-tables-swapped", "weights/convert.py", '("self_attn.pos_embed.height_rel", "attn.rel_h"),\n'
      '    ("self_attn.pos_embed.width_rel", "attn.rel_w"),', '("self_attn.pos_embed.height_rel", "attn.rel_w"),\n'
      '    ("self_attn.pos_embed.width_rel", "attn.rel_h"),', TIMM),
    m("imagenet-101-is-152", "models/presets.py", '("torchvision:ResNet101_Weights.DEFAULT",)',
      '("torchvision:ResNet152_Weights.DEFAULT",)',
      "tests/test_pretrained.py::test_imagenet_names_the_resnet_of_the_same_depth"),
    m("bn-running-stats-not-loaded", "weights/fit.py", 'if k in target and (use_fc or not k.startswith("fc."))}',
      'if k in target and "running_" not in k and (use_fc or not k.startswith("fc."))}',
      "tests/test_pretrained.py::test_torchvision_enum_fills_the_resnet_layers_from_the_torch_hub_cache"),
    # -- detection ------------------------------------------------------------------------------
    m("rpn-head-not-float32", "detection/precision.py", "heads = [model.rpn.head, model.roi_heads.box_predictor,",
      "heads = [model.roi_heads.box_predictor,", *PRECISION),
    m("box-predictor-not-float32", "detection/precision.py", "heads = [model.rpn.head, model.roi_heads.box_predictor,",
      "heads = [model.rpn.head,", *PRECISION),
    m("anchor-aspect-inverted", "detection/anchors.py", "np.percentile(wh[:, 1] / wh[:, 0], [10, 50, 90])",
      "np.percentile(wh[:, 0] / wh[:, 1], [10, 50, 90])",
      "tests/detection/test_anchors.py::test_auto_aspect_ratio_is_height_over_width"),
    m("mask-paste-strip-short", "detection/masks.py", "right = max(min(int(box[2]) + 1, width), left)",
      "right = max(min(int(box[2]), width), left)",
      "tests/detection/test_masks.py::test_one_at_a_time_equals_torchvisions_paste_and_coco_encoding"),
    m("ap-keys-swapped", "detection/evaluator.py", '("ap", "ap50", "ap75", "aps", "apm", "apl")',
      '("ap", "ap75", "ap50", "aps", "apm", "apl")',
      "tests/detection/test_evaluator.py::test_each_key_holds_its_own_figure_on_a_set_where_all_six_differ"),
    m("stats-percentiles-of-width", "detection/anchors.py", "q = np.percentile(s, [5, 25, 50, 75, 95])",
      "q = np.percentile(stats.wh[:, 0], [5, 25, 50, 75, 95])", STATS),
    m("stats-coverage-not-percent", "detection/anchors.py", 'f"{100 * coverage(stats.wh, anchor_shapes(sizes, scales, '
      'ratios)):.0f}%', 'f"{coverage(stats.wh, anchor_shapes(sizes, scales, ratios)):.0f}%', STATS),
    m("train-empty-ignored", "detection/task.py", "keep_empty=d.train_empty,", "keep_empty=False,",
      "tests/detection/test_task.py::test_train_empty_keeps_or_drops_images_without_objects"),
    # -- data -----------------------------------------------------------------------------------
    m("exif-5-8-ignored", "data/images.py", "and 1 <= value <= 8 else 1", "and 1 <= value <= 8 and value not in (5, 8) "
      "else 1", "tests/hostile/test_exif_photos.py::test_every_orientation_reads_as_pil_turns_it"),
    # (a window that is too small is safe, the whole image is decoded then: its end is checked
    # where the window's pixels are counted)
    m("polygon-window-end-short", "data/coco.py", "rows, cols = bottom - top, right - left",
      "rows, cols = bottom - top, right - left - 1", POLYGONS),
    m("polygon-run-end-off-by-one", "data/coco.py", "ends[1::2] - 1  # runs", "ends[1::2]  # runs", POLYGONS),
    m("nan-accepted", "data/coco_validate.py", "and math.isfinite(v)", "and not math.isinf(v)",
      "tests/hostile/test_coco_input.py::test_nan_bbox"),
    m("area-from-the-box", "data/coco.py", 'ann["area"] = float(mask_utils.area(rle))',
      'ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])',
      "tests/data/test_coco.py::test_a_missing_area_is_the_mask_area_not_the_box_area"),
    m("duplicate-category-accepted", "data/coco_validate.py", 'elif c["id"] in cat_ids:', "elif False:",
      "tests/hostile/test_coco_input.py::test_duplicate_category_ids"),
    m("dotdot-file-name-kept", "data/coco_validate.py", 'return parts[0] == ".."', "return False",
      "tests/hostile/test_coco_input.py::test_file_name_leaving_the_image_folder"),
    # -- training engine ------------------------------------------------------------------------
    m("scheduler-not-restored", "engine/trainer.py", 'self.scheduler.load_state_dict(state["scheduler"])', "pass", RESUME),
    m("optimizer-not-restored", "engine/trainer.py", 'self.optimizer.load_state_dict(state["optimizer"])', "pass", RESUME),
    m("ema-not-restored", "engine/trainer.py", "if hook.state_key:", 'if hook.state_key and hook.state_key != "ema":',
      RESUME),
    m("rng-not-restored", "engine/trainer.py", "ckpt.set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])",
      "pass", RESUME),
    m("amp-not-restored", "engine/trainer.py", 'if self.cfg.amp.dtype == "auto" and state.get("amp"):', "if False:",
      "tests/engine/test_engine_amp.py::test_resume_under_auto_keeps_the_precision_the_checkpoint_recorded"),
    m("amp-margin-removed", "engine/amp_choice.py", 'times["fp32"] * FP32_MARGIN < times["bf16"]',
      'times["fp32"] < times["bf16"]', "tests/engine/test_engine_amp.py::"
      "test_auto_measures_where_the_cpu_has_bf16_and_keeps_fp32_only_when_clearly_faster"),
    m("warmup-cap-removed", "engine/optim.py", "warmup = min(warmup, math.floor(cfg.max_warmup_fraction * total_steps))",
      "pass", "tests/engine/test_engine_optim.py::"
      "test_step_schedule_milestones_as_fractions_follow_the_run_and_warmup_is_capped"),
    m("cosine-span-ignores-warmup", "engine/optim.py", "span = max(1, total_steps - warmup)", "span = max(1, total_steps)",
      "tests/engine/test_engine_optim.py::test_cosine_with_linear_warmup"),
    # -- classification -------------------------------------------------------------------------
    m("top1-counts-top2", "classification/task.py", "hits[:, :k].any(dim=1)", "hits[:, :max(k, 2)].any(dim=1)",
      "tests/classification/test_task.py"),
    m("small-data-threshold-off-by-one", "classification/api.py", "if len(files) >= limit:", "if len(files) > limit:",
      "tests/classification/test_small_real.py::test_small_folders_of_small_images_choose_cls_small"),
    m("recipe-chosen-despite-config", "cli/run_args.py", "if args.config is not None or args.resume is not None:",
      "if args.resume is not None:",
      "tests/classification/test_small_real.py::test_cli_names_the_chosen_recipe_first_and_trains_with_it"),
    m("unwritable-out-accepted", "io.py", "if not os.access(existing, os.W_OK | os.X_OK):", "if False:",
      "tests/hostile/test_run_folder.py::test_eval_cls_with_out_that_is_not_writable"),
    m("confusion-transposed", "classification/report.py", "flat = labels.long() * num_classes + predicted.long()",
      "flat = predicted.long() * num_classes + labels.long()",
      "tests/classification/test_task.py::test_confusion_counts_and_top_k_follow_the_class_count"),
    # -- evaluation repeats the run's own ----------------------------------------------------------
    m("eval-pads-to-the-batch", "detection/maskrcnn.py", "model.transform.pad_square = canvas",
      "model.transform.pad_square = None",
      "tests/detection/test_maskrcnn.py::test_an_images_detections_do_not_depend_on_the_images_batched_with_it",
      "tests/detection/test_cli_det.py::test_eval_of_the_best_weights_repeats_the_runs_own_evaluation"),
    m("eval-amp-not-the-runs", "engine/evaluate.py", "recorded = metadata.get(EVAL_AMP)", "recorded = None",
      "tests/detection/test_cli_det.py::test_eval_of_the_best_weights_repeats_the_runs_own_evaluation"),
    # -- export ---------------------------------------------------------------------------------
    m("dynamic-export-one-size", "export_check.py", "    if dynamic:\n        b, c, h, w = example.shape",
      "    if False:\n        b, c, h, w = example.shape",
      "tests/deploy/test_export.py::test_a_dynamic_export_is_checked_at_a_second_size"),
    m("dynamic-axes-unnamed", "export_formats.py", "    if dynamic:\n        name_dynamic_axes(tmp)", "",
      "tests/deploy/test_export.py::test_dynamic_export_of_a_small_classifier_needs_no_size"),
    m("mask-loop-axis-declared-0", "export_formats.py", "    free_growing_loop_axes(proto.graph)\n", "",
      "tests/deploy/test_export.py::test_detector_onnx_runs_without_runtime_warnings"),
]


def misfits(root: Path, mutants: list[Mutant]) -> list[str]:
    """What no longer fits the code: a text not found exactly once, a named test file missing."""
    found = []
    for mu in mutants:
        path = root / PKG / mu.file
        count = path.read_text().count(mu.original) if path.exists() else 0
        if count != 1:
            found.append(f"{mu.name}: its original text is found {count} times in {PKG}{mu.file}, not once")
        found += [f"{mu.name}: no test file {t.split('::')[0]}" for t in mu.tests if not (root / t.split("::")[0]).exists()]
    return found


def run_tests(copy: Path, tests: list[str], timeout: float) -> int:
    """pytest's exit status for ``tests`` in the copy, its own ``src`` first on the path."""
    # no bytecode: a mutant of the same length, written and undone within a second, would leave a
    # cached module that the next run takes for the source
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        return subprocess.run(cmd, cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return -1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", metavar="NAME", help="run this mutant (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutants and check their texts; run nothing")
    p.add_argument("--no-baseline", action="store_true", help="skip running the named tests on the unmutated copy")
    p.add_argument("--timeout", type=float, default=900, help="seconds per test run; a mutant that hangs is caught")
    args = p.parse_args(argv)
    chosen = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {mu.name for mu in MUTANTS})
        if unknown:
            p.error(f"unknown mutant(s) {unknown}; --list names them")
        chosen = [mu for mu in MUTANTS if mu.name in args.only]
    problems = misfits(ROOT, chosen)
    if args.list:
        for mu in chosen:
            print(f"{mu.name:32s} {PKG}{mu.file}")
            for test in mu.tests:
                print(f"{'':32s} {test}")
    for line in problems:
        print(f"mutants: {line}", file=sys.stderr)
    if problems or args.list:
        return 2 if problems else 0
    with tempfile.TemporaryDirectory(prefix="botnet-mutants-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=SKIP, symlinks=True)
        everything = sorted({t for mu in chosen for t in mu.tests})
        if not args.no_baseline and run_tests(copy, everything, args.timeout) != 0:
            print("mutants: the named tests do not all pass on the unmutated code; fix that first "
                  f"(python -m pytest {' '.join(everything)})", file=sys.stderr)
            return 2
        missed = []
        for mu in chosen:
            path = copy / PKG / mu.file
            text = path.read_text()
            path.write_text(text.replace(mu.original, mu.replacement))
            try:
                code = run_tests(copy, list(mu.tests), args.timeout)
            finally:
                path.write_text(text)
            if code in (4, 5):  # usage error or nothing collected: the list is wrong, not the code
                print(f"mutants: {mu.name}: pytest found no such tests ({' '.join(mu.tests)})", file=sys.stderr)
                return 2
            caught = code != 0
            print(f"{'caught' if caught else 'MISSED':6s}  {mu.name}" + ("  (timed out)" if code == -1 else ""), flush=True)
            if not caught:
                missed.append(mu.name)
    print(f"{len(chosen) - len(missed)} of {len(chosen)} caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
