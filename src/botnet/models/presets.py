"""Named presets: every model of the paper as a row of configuration (arXiv 2101.11605, Table 1 and
the ImageNet experiments).

Detection backbones (BoTNet-50..200) replace the three c5 blocks with BoT blocks and keep c5's
stride 2 through the average pool; their default input is the paper's 1024 x 1024 canvas.
BoTNet-S1 runs c5 at stride 1. The "T" models add SE (0.0625 of the block's output channels) and
SiLU, and make every c5 block a BoT block. ``*_tiny`` presets are small variants of ours (not from
the paper) for tests and the CPU demo.

The ``*_256`` rows are timm's BoTNets (timm's ``byoanet`` configs, function for function): the
tiered 3x3 stem, BoT blocks interleaved inside stages c3..c5, no activation on the projection
shortcut and the unscaled position term. Their tables follow the input size like every row's.
``eca_botnext26ts_256``: timm gives its q/k heads 16 channels and v 64 / 128; ours are one width,
so its q/k weights load zero-padded to v's width (same function, more q/k parameters).
"""
from __future__ import annotations

from botnet.models.config import ModelConfig

R50, R101, R152, R200 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3), (3, 24, 36, 3)
C5_BOT3 = (0, 0, 0, 3)
T_MODEL = dict(c5_stride=1, se_ratio=0.0625, act="silu")
TIMM_T = dict(stem="tiered", bot_shortcut_act=False, scale_pos_embed=False, img_size=(256, 256))
R26, BOT26 = (2, 2, 2, 2), ((), (), (1,), (0, 1))

#: ``imagenet`` for the paper's depths: the same-depth torchvision ResNet's current best weights
#: (``DEFAULT``; the paper's ImageNet initialisation, arXiv 2101.11605, the COCO experiments)
TV50, TV101, TV152 = (("torchvision:ResNet50_Weights.DEFAULT",), ("torchvision:ResNet101_Weights.DEFAULT",),
                      ("torchvision:ResNet152_Weights.DEFAULT",))
NONE = ()

#: name: (architecture, pretrained weights sources: the first is what ``pretrained="imagenet"`` loads)
PRESETS: dict[str, tuple[ModelConfig, tuple[str, ...]]] = {
    "resnet50": (ModelConfig(R50, description="ResNet-50 baseline"), TV50),
    "resnet101": (ModelConfig(R101, description="ResNet-101 baseline"), TV101),
    "resnet152": (ModelConfig(R152, description="ResNet-152 baseline"), TV152),
    "resnet200": (ModelConfig(R200, description="ResNet-200 baseline"), NONE),
    "botnet50": (ModelConfig(R50, C5_BOT3, img_size=(1024, 1024), description="BoT50 (detection backbone)"), TV50),
    "botnet101": (ModelConfig(R101, C5_BOT3, img_size=(1024, 1024), description="BoT101 (detection backbone)"),
                  TV101),
    "botnet152": (ModelConfig(R152, C5_BOT3, img_size=(1024, 1024), description="BoT152 (detection backbone)"),
                  TV152),
    "botnet200": (ModelConfig(R200, C5_BOT3, img_size=(1024, 1024), description="BoT200 (detection backbone)"),
                  NONE),
    "botnet_s1_50": (ModelConfig(R50, C5_BOT3, c5_stride=1, description="BoTNet-S1-50 (stride-1 c5)"), TV50),
    "botnet_s1_t3": (ModelConfig((3, 4, 6, 6), (0, 0, 0, 6), **T_MODEL, description="T3 = BoTNet-S1-59"), NONE),
    "botnet_s1_t4": (ModelConfig((3, 4, 23, 6), (0, 0, 0, 6), **T_MODEL, description="T4 = BoTNet-S1-110"), NONE),
    "botnet_s1_t5": (ModelConfig((3, 4, 23, 12), (0, 0, 0, 12), **T_MODEL, img_size=(256, 256),
                                 description="T5 = BoTNet-S1-128 @256"), NONE),
    "botnet_s1_t6": (ModelConfig((3, 4, 6, 12), (0, 0, 0, 12), **T_MODEL, img_size=(320, 320),
                                 description="T6 = BoTNet-S1-77 @320"), NONE),
    "botnet_s1_t7_320": (ModelConfig((3, 4, 23, 12), (0, 0, 0, 12), **T_MODEL, img_size=(320, 320),
                                     description="T7-320 = BoTNet-S1-128 @320"), NONE),
    "botnet_s1_t7": (ModelConfig((3, 4, 23, 12), (0, 0, 0, 12), **T_MODEL, img_size=(384, 384),
                                 description="T7 = BoTNet-S1-128 @384"), NONE),
    # timm's BoTNets ("T": tiered stem, "s": SiLU) with timm's ImageNet-1k weights; docs/pretrained.md
    "botnet26t_256": (ModelConfig(R26, bot_blocks=BOT26, **TIMM_T, description="timm's botnet26t_256"),
                      ("timm:botnet26t_256.c1_in1k",)),
    "sebotnet33ts_256": (ModelConfig((2, 3, 3, 2), bot_blocks=((), (2,), (2,), (0, 1)),
                                     out_channels=(256, 512, 1024, 1536), act="silu", mid_attn="se",
                                     stem_pool=False, num_features=1280, **TIMM_T,
                                     description="timm's sebotnet33ts_256 (SE after the 3x3)"),
                         ("timm:sebotnet33ts_256.a1h_in1k",)),
    "eca_botnext26ts_256": (ModelConfig(R26, bot_blocks=BOT26, act="silu", mid_attn="eca", group_size=16, **TIMM_T,
                                        description="timm's eca_botnext26ts_256 (grouped 3x3, ECA)"),
                            ("timm:eca_botnext26ts_256.c1_in1k",)),
    "botnet50ts_256": (ModelConfig(R50, bot_blocks=((), (3,), (1, 3, 5), (1,)), act="silu", **TIMM_T,
                                   description="timm's botnet50ts_256"), NONE),
    # small variants (ours, not the paper's): same structure, a fraction of the width and depth
    "resnet_tiny": (ModelConfig((1, 1, 1, 1), stem_width=16, widths=(16, 32, 64, 128), img_size=(128, 128),
                                description="tiny ResNet (tests, CPU demo)"), NONE),
    "botnet_tiny": (ModelConfig((1, 1, 1, 1), (0, 0, 0, 1), stem_width=16, widths=(16, 32, 64, 128),
                                img_size=(128, 128), description="tiny BoTNet (tests, CPU demo)"), NONE),
    "botnet_s1_tiny": (ModelConfig((1, 1, 1, 2), (0, 0, 0, 2), stem_width=16, widths=(16, 32, 64, 128),
                                   img_size=(128, 128), **T_MODEL, description="tiny BoTNet-S1 T-style"), NONE),
}

#: The paper's figures for ``botnet profile --paper``: params (M, with the 1000-way classifier)
#: and multiply-adds (G) at the given input; ``backbone`` counts c1..c5 only (the paper's Table 1).
PAPER_FIGURES = [
    # name, input, params_M, gmacs, backbone_only
    ("resnet50", 1024, 25.5, 85.4, True),
    ("botnet50", 1024, 20.8, 102.98, True),
    ("resnet101", 224, 44.6, None, False),
    ("botnet101", 1024, 39.9, None, True),
    ("resnet152", 224, 60.2, None, False),
    ("botnet152", 1024, 55.5, None, True),
    ("resnet200", 224, 64.7, None, False),
    ("botnet200", 1024, 60.0, None, True),
    ("botnet_s1_50", 224, 20.8, None, False),
    ("botnet_s1_t3", 224, 33.5, 7.3, False),
    ("botnet_s1_t4", 224, 54.7, 10.9, False),
    ("botnet_s1_t5", 256, 75.1, 19.3, False),
    ("botnet_s1_t6", 320, 53.9, 23.3, False),
    ("botnet_s1_t7_320", 320, 75.1, 30.9, False),
    ("botnet_s1_t7", 384, 75.1, 45.8, False),
]

#: timm's own figures for its BoTNets (``botnet profile --timm``): params (M) and GMACs at 256 x 256
#: from timm's published inference benchmark (timm's results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv),
#: ImageNet-1k top-1 of the weights registered with the row (its PRESETS entry) from timm's
#: results/results-imagenet.csv (None: timm has no weights).
TIMM_FIGURES = [
    # name, input, params_M, gmacs, top1
    ("botnet26t_256", 256, 12.49, 3.32, 79.256),
    ("sebotnet33ts_256", 256, 13.70, 3.89, 81.156),
    ("eca_botnext26ts_256", 256, 10.59, 2.46, 79.262),
    ("botnet50ts_256", 256, 22.74, 5.54, None),
]
