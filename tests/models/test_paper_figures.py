"""Parameter counts within 1% and multiply-adds within 3% of the paper (spec section 4)."""
import pytest
import torch

import botnet
from botnet.models.presets import PAPER_FIGURES
from botnet.profile import count_macs, count_params


@pytest.mark.parametrize("name,size,params_m,gmacs,backbone", PAPER_FIGURES, ids=[r[0] for r in PAPER_FIGURES])
def test_matches_paper(name, size, params_m, gmacs, backbone):
    with torch.device("meta"):
        model = botnet.create_model(name)
    params = count_params(model) / 1e6
    assert abs(params - params_m) / params_m < 0.01, f"{name}: {params:.2f}M vs paper {params_m}M"
    if gmacs is not None:
        macs = count_macs(model, (size, size), backbone_only=backbone) / 1e9
        assert abs(macs - gmacs) / gmacs < 0.03, f"{name}: {macs:.2f}G vs paper {gmacs}G"


def test_cpu_fused_attention_is_counted():
    from botnet.layers import MHSA2d

    m = MHSA2d(16, heads=2, pos_enc=None)
    x = torch.randn(1, 16, 8, 8)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        m(x)
    n, d, heads = 64, 8, 2
    qkv = 3 * 16 * 16 * n
    assert counter.get_total_flops() // 2 == qkv + 2 * heads * n * n * d
