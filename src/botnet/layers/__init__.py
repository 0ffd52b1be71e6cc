"""Building blocks: position encodings, MHSA, bottleneck and BoT blocks, SE, stochastic depth."""
from botnet.layers.act import get_act_layer
from botnet.layers.attention import MHSA2d
from botnet.layers.blocks import Bottleneck, BoTBlock
from botnet.layers.drop import DropPath
from botnet.layers.pos_embed import (
    expand_rel_table,
    rel_table_for_length,
    relative_index,
    relative_logits_1d,
    relative_logits_2d,
    resize_abs_table,
)
from botnet.layers.se import SqueezeExcite

__all__ = [
    "MHSA2d", "Bottleneck", "BoTBlock", "SqueezeExcite", "DropPath", "get_act_layer",
    "relative_index", "expand_rel_table", "relative_logits_1d", "relative_logits_2d", "rel_table_for_length",
    "resize_abs_table",
]
