"""Anchors that fit the data: box statistics at the training canvas, anchor coverage, and the
``--anchors auto`` rule.

Boxes are measured as the detector sees them: an image is resized so that its longer side is the
canvas (scale jitter 1), so a ``w x h`` box of an ``W x H`` image becomes ``w * s x h * s`` with
``s = canvas / max(W, H)``.

Coverage: the fraction of boxes whose best anchor, centred on the box, overlaps it with IoU at
least the RPN's foreground threshold (0.7). This is the best case of the RPN's matching (an
anchor centre rarely falls exactly on a box centre), so it is an upper bound: what it says is
whether the anchor *shapes* fit the boxes at all.

The auto rule (arXiv 2101.11605 keeps Mask R-CNN's anchors: 32..512 on a 1024 canvas, one size per
FPN level p2..p6, three aspect ratios; we keep that structure and fit its numbers):

- sizes: one per level, doubling from level to level as the FPN strides do, the smallest a power
  of two times the 5th percentile of the box sizes ``sqrt(w h)`` at the canvas, rounded to a whole
  pixel and at least 4; three scales per level (1, 2^(1/3), 2^(2/3)) fill the octave between;
- aspect ratios (h / w): the 10th, 50th and 90th percentiles of the boxes', rounded to a quarter
  octave (one to three distinct values) and kept within 1:8 .. 8:1.

Only boxes at least a pixel wide and high at the canvas are fitted to: training drops smaller ones
(they vanish when the image is resized), and a 0.001 px wide box would otherwise ask for anchors of
aspect ratio 40,000, whose regression targets overflow (a NaN loss).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from botnet.errors import UserError

RPN_FG_IOU = 0.7
#: the most elongated anchor --anchors auto chooses (h / w or w / h)
MAX_ASPECT = 8.0
OCTAVE_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))


@dataclass
class BoxStats:
    """Boxes of a COCO file at a canvas: ``wh`` (N, 2) sizes in canvas pixels, per-image counts."""

    wh: np.ndarray
    boxes_per_image: np.ndarray
    class_counts: dict[str, int] = field(default_factory=dict)

    @property
    def sizes(self) -> np.ndarray:
        return np.sqrt(self.wh[:, 0] * self.wh[:, 1])

    @property
    def fittable(self) -> np.ndarray:
        """The sizes of the boxes at least a pixel wide and high at the canvas (the module docstring)."""
        return self.wh[(self.wh >= 1).all(axis=1)]


def category_names(categories: list[dict]) -> dict[int, str]:
    """A name for each category id: its ``name`` when that is a non-empty string, else ``id N``;
    names that several categories share get their id added, so that they are counted apart."""
    raw = {c["id"]: c["name"] if isinstance(c.get("name"), str) and c["name"] else f"id {c['id']}"
           for c in categories}
    shared = {n for n in raw.values() if list(raw.values()).count(n) > 1}
    return {cid: f"{n} (id {cid})" if n in shared else n for cid, n in raw.items()}


def box_stats(ann_file: str | os.PathLike, canvas: int) -> BoxStats:
    """The boxes of a (validated) COCO instances file, measured at ``canvas``."""
    from botnet.data.coco import load_coco

    coco = load_coco(ann_file, check_images=False)
    wh, counts = [], []
    names = category_names(coco.dataset["categories"])
    classes = {name: 0 for name in names.values()}
    for image_id, info in coco.imgs.items():
        anns = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        scale = canvas / max(info["width"], info["height"])
        counts.append(len(anns))
        for a in anns:
            wh.append((a["bbox"][2] * scale, a["bbox"][3] * scale))
            classes[names[a["category_id"]]] += 1
    array = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    return BoxStats(array[(array > 0).all(axis=1)], np.asarray(counts), classes)


def anchor_shapes(sizes, scales, ratios) -> np.ndarray:
    """(A, 2) anchor widths and heights, as torchvision's AnchorGenerator makes them
    (h / w = ratio at the same area)."""
    shapes = []
    for size in sizes:
        for k in scales:
            for r in ratios:
                area = (size * k) ** 2
                shapes.append((math.sqrt(area / r), math.sqrt(area * r)))
    return np.asarray(shapes)


def coverage(wh: np.ndarray, anchors: np.ndarray, iou: float = RPN_FG_IOU) -> float:
    """Fraction of boxes whose best centred anchor reaches ``iou`` (see the module docstring)."""
    if not len(wh):
        return 0.0
    w, h = wh[:, None, 0], wh[:, None, 1]
    inter = np.minimum(w, anchors[None, :, 0]) * np.minimum(h, anchors[None, :, 1])
    union = w * h + anchors[None, :, 0] * anchors[None, :, 1] - inter
    return float(((inter / union).max(axis=1) >= iou).mean())


def _quarter_octave(x: float) -> float:
    return float(2 ** (round(math.log2(x) * 4) / 4))


def auto_anchors(stats: BoxStats) -> dict:
    """``anchor_sizes``, ``anchor_scales`` and ``aspect_ratios`` for the boxes (the module's rule)."""
    wh = stats.fittable
    if not len(wh):
        raise UserError(f"no (non-crowd) box of at least 1x1 pixels at the canvas to fit anchors to "
                        f"({len(stats.wh)} smaller); give anchor sizes instead of auto")
    base = max(4, int(round(np.percentile(np.sqrt(wh[:, 0] * wh[:, 1]), 5))))
    ratios = np.clip(np.percentile(wh[:, 1] / wh[:, 0], [10, 50, 90]), 1 / MAX_ASPECT, MAX_ASPECT)
    aspect = sorted({round(_quarter_octave(float(r)), 4) for r in ratios})
    return {"anchor_sizes": [base * 2 ** k for k in range(5)], "anchor_scales": [round(s, 4) for s in OCTAVE_SCALES],
            "aspect_ratios": aspect}


def fit_anchors(cfg, say=print):
    """``cfg`` (a DetectionConfig) with anchors fitted to its training boxes by the auto rule; the
    coverage before and after is reported through ``say``."""
    import dataclasses

    stats = box_stats(cfg.data.train_ann, cfg.data.img_size)
    m = cfg.model
    try:
        fitted = auto_anchors(stats)
    except UserError as e:
        raise UserError(f"{cfg.data.train_ann}: --anchors auto: {e}") from None
    if len(stats.fittable) < len(stats.wh):
        say(f"--anchors auto: {len(stats.wh) - len(stats.fittable)} of {len(stats.wh)} training boxes are under a "
            f"pixel wide or high at canvas {cfg.data.img_size} (training drops them) and are not fitted to")
    # with anchor_sizes "auto", "before" is the default sizes (the paper's 32..512)
    sizes = type(m)().anchor_sizes if m.anchor_sizes == "auto" else m.anchor_sizes
    before = coverage(stats.wh, anchor_shapes(sizes, m.anchor_scales, m.aspect_ratios))
    after = coverage(stats.wh, anchor_shapes(**{"sizes": fitted["anchor_sizes"], "scales": fitted["anchor_scales"],
                                                  "ratios": fitted["aspect_ratios"]}))
    say(f"anchors fitted to {len(stats.wh)} training boxes at canvas {cfg.data.img_size}: "
        f"sizes {fitted['anchor_sizes']} "
        f"x scales {fitted['anchor_scales']}, aspect ratios {fitted['aspect_ratios']}; boxes with an anchor of "
        f"IoU >= {RPN_FG_IOU}: {100 * before:.0f}% -> {100 * after:.0f}%")
    return dataclasses.replace(cfg, model=dataclasses.replace(m, **fitted))


def describe(stats: BoxStats, sizes, scales, ratios) -> list[str]:
    """The lines of ``botnet data stats``."""
    s = stats.sizes
    lines = [f"images: {len(stats.boxes_per_image)}, boxes: {len(s)} "
             f"({stats.boxes_per_image.mean():.1f} per image, max {stats.boxes_per_image.max(initial=0)})"]
    if len(s):
        q = np.percentile(s, [5, 25, 50, 75, 95])
        lines.append("box size sqrt(w h) at the canvas, percentiles 5/25/50/75/95: "
                     + " / ".join(f"{v:.1f}" for v in q) + " px")
        lines.append(f"aspect h / w, median {np.median(stats.wh[:, 1] / stats.wh[:, 0]):.2f}")
    lines.append("classes: " + ", ".join(f"{k} {v}" for k, v in stats.class_counts.items()))
    lines.append(f"anchors {list(sizes)} x {list(scales)}, ratios {list(ratios)}: "
                 f"{100 * coverage(stats.wh, anchor_shapes(sizes, scales, ratios)):.0f}% of boxes have one of IoU >= {RPN_FG_IOU}")
    fit = auto_anchors(stats) if len(stats.fittable) else None
    if len(s) and fit is None:
        lines.append("--anchors auto: no box of at least 1x1 pixels at the canvas to fit to")
    if fit:
        lines.append(f"--anchors auto would use {fit['anchor_sizes']} x {fit['anchor_scales']}, ratios "
                     f"{fit['aspect_ratios']}: {100 * coverage(stats.wh, anchor_shapes(fit['anchor_sizes'], fit['anchor_scales'], fit['aspect_ratios'])):.0f}%")
    return lines


def plot_stats(stats: BoxStats, sizes, path: str | os.PathLike) -> None:
    """Histogram of the box sizes at the canvas (log scale) with the anchor sizes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from botnet.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if len(stats.sizes):
        low = stats.sizes.min() / 1.2  # boxes under a pixel too: the histogram shows them
        bins = np.geomspace(low, max(stats.sizes.max() * 1.2, low * 2), 40)
        ax.hist(stats.sizes, bins=bins, color="tab:blue", alpha=0.8, label="boxes")
    for i, size in enumerate(sizes):
        ax.axvline(size, color="tab:red", ls="--", lw=1, label="anchor sizes" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("box size sqrt(w h) at the canvas (px)")
    ax.set_ylabel("boxes")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
