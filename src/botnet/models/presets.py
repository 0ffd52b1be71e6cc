"""Named presets: every model of the paper as a row of configuration (spec section 4).

Detection backbones (BoTNet-50..200) replace the three c5 blocks with BoT blocks and keep c5's
stride 2 through the average pool; their default input is the paper's 1024 x 1024 canvas.
BoTNet-S1 runs c5 at stride 1. The "T" models add SE (0.0625 of the block's output channels) and
SiLU, and make every c5 block a BoT block. ``*_tiny`` presets are small variants of ours (not from
the paper) for tests and the CPU demo.
"""
from __future__ import annotations

from botnet.models.config import ModelConfig

R50, R101, R152, R200 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3), (3, 24, 36, 3)
C5_BOT3 = (0, 0, 0, 3)
T_MODEL = dict(c5_stride=1, se_ratio=0.0625, act="silu")

PRESETS: dict[str, ModelConfig] = {
    "resnet50": ModelConfig(R50, description="ResNet-50 baseline"),
    "resnet101": ModelConfig(R101, description="ResNet-101 baseline"),
    "resnet152": ModelConfig(R152, description="ResNet-152 baseline"),
    "resnet200": ModelConfig(R200, description="ResNet-200 baseline"),
    "botnet50": ModelConfig(R50, C5_BOT3, input_size=(1024, 1024), description="BoT50 (detection backbone)"),
    "botnet101": ModelConfig(R101, C5_BOT3, input_size=(1024, 1024), description="BoT101 (detection backbone)"),
    "botnet152": ModelConfig(R152, C5_BOT3, input_size=(1024, 1024), description="BoT152 (detection backbone)"),
    "botnet200": ModelConfig(R200, C5_BOT3, input_size=(1024, 1024), description="BoT200 (detection backbone)"),
    "botnet_s1_50": ModelConfig(R50, C5_BOT3, c5_stride=1, description="BoTNet-S1-50 (stride-1 c5)"),
    "botnet_s1_t3": ModelConfig((3, 4, 6, 6), (0, 0, 0, 6), **T_MODEL, description="T3 = BoTNet-S1-59"),
    "botnet_s1_t4": ModelConfig((3, 4, 23, 6), (0, 0, 0, 6), **T_MODEL, description="T4 = BoTNet-S1-110"),
    "botnet_s1_t5": ModelConfig((3, 4, 23, 12), (0, 0, 0, 12), **T_MODEL, input_size=(256, 256),
                                description="T5 = BoTNet-S1-128 @256"),
    "botnet_s1_t6": ModelConfig((3, 4, 6, 12), (0, 0, 0, 12), **T_MODEL, input_size=(320, 320),
                                description="T6 = BoTNet-S1-77 @320"),
    "botnet_s1_t7_320": ModelConfig((3, 4, 23, 12), (0, 0, 0, 12), **T_MODEL, input_size=(320, 320),
                                    description="T7-320 = BoTNet-S1-128 @320"),
    "botnet_s1_t7": ModelConfig((3, 4, 23, 12), (0, 0, 0, 12), **T_MODEL, input_size=(384, 384),
                                description="T7 = BoTNet-S1-128 @384"),
    # small variants (ours, not the paper's): same structure, a fraction of the width and depth
    "resnet_tiny": ModelConfig((1, 1, 1, 1), stem_width=16, widths=(16, 32, 64, 128), input_size=(128, 128),
                               description="tiny ResNet (tests, CPU demo)"),
    "botnet_tiny": ModelConfig((1, 1, 1, 1), (0, 0, 0, 1), stem_width=16, widths=(16, 32, 64, 128),
                               input_size=(128, 128), description="tiny BoTNet (tests, CPU demo)"),
    "botnet_s1_tiny": ModelConfig((1, 1, 1, 2), (0, 0, 0, 2), stem_width=16, widths=(16, 32, 64, 128),
                                  input_size=(128, 128), **T_MODEL, description="tiny BoTNet-S1 T-style"),
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
