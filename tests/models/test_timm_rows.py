"""timm's BoTNets as rows of our family: the same function as timm's models, at any input size."""
import pytest
import torch

timm = pytest.importorskip("timm")

import botnet  # noqa: E402
from botnet.layers import BoTBlock, MHSA2d  # noqa: E402
from botnet.layers.eca import EfficientChannelAttention  # noqa: E402
from botnet.layers.se import SqueezeExcite  # noqa: E402
from botnet.weights.pretrained import Fetched, load_fetched  # noqa: E402

TIMM_ROWS = ["botnet26t_256", "sebotnet33ts_256", "eca_botnext26ts_256", "botnet50ts_256"]


def randomise(model: torch.nn.Module) -> None:
    """Non-trivial norms (the zero-initialised last BN would hide residual branches) and large
    position tables (so that a wrong scale or index shows)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if "pos_embed" in name:
                p.normal_(std=0.5, generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_ROWS)
def test_converted_row_computes_what_timm_computes(name):
    theirs = timm.create_model(name, pretrained=False).eval()
    randomise(theirs)
    ours = botnet.create_model(name).eval()
    report = load_fetched(ours, Fetched(theirs.state_dict(), f"timm {name}", "timm"), strict=True)
    assert not report.missing and not report.skipped
    stage_outputs = []
    for stage in theirs.stages:
        stage.register_forward_hook(lambda module, args, out: stage_outputs.append(out))
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
        feats = ours.forward_features(x)
    assert list(feats) == ["c2", "c3", "c4", "c5"]  # the stage outputs, for FPN
    for ours_map, theirs_map in zip(feats.values(), stage_outputs):
        # sharp attention (large tables) amplifies fp32 rounding: compare relative to the map's scale
        assert ours_map.shape == theirs_map.shape
        assert (ours_map - theirs_map).abs().max() <= 1e-5 * theirs_map.abs().max()
    assert [f.shape[-1] for f in feats.values()] == [64, 32, 16, 8]


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_ROWS)
def test_any_input_size_where_timm_asserts(name):
    ours = botnet.create_model(name).eval()
    theirs = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        with pytest.raises(Exception):  # timm's BottleneckAttn asserts its feature size
            theirs(torch.randn(1, 3, 320, 320))
        for size in [(320, 320), (200, 288)]:
            feats = ours.forward_features(torch.randn(1, 3, *size))
            assert feats["c5"].shape[-2:] == (-(-size[0] // 32), -(-size[1] // 32))
            assert ours.forward_head(feats["c5"]).shape == (1, 1000)
    # the tables stay sized for the default input; other sizes read or resample them
    assert {m.feat_size for m in ours.modules() if isinstance(m, MHSA2d)} <= {(32, 32), (16, 16), (8, 8)}


def test_rows_hold_timm_structure():
    bot26 = botnet.create_model("botnet26t_256")
    assert [c.shape[0] for c in (bot26.stem.conv1.conv.weight, bot26.stem.conv2.conv.weight,
                                 bot26.stem.conv3.conv.weight)] == [24, 32, 64]
    assert isinstance(bot26.layer1[0].act3, torch.nn.ReLU)
    kinds = [[isinstance(b, BoTBlock) for b in s] for s in bot26.stages]
    assert kinds == [[False, False], [False, False], [False, True], [True, True]]
    assert len(bot26.layer4[0].downsample) == 2  # conv + BN: no activation on the projection shortcut
    assert all(not m.scale_pos_embed for m in bot26.modules() if isinstance(m, MHSA2d))

    se33 = botnet.create_model("sebotnet33ts_256")
    assert not hasattr(se33.stem, "pool") and se33.stem.conv3.conv.stride == (2, 2)
    assert isinstance(se33.layer1[0].mid_attn, SqueezeExcite) and se33.layer1[0].mid_attn.fc1.out_channels == 8
    assert se33.layer4[0].conv1.out_channels == 512  # timm's bottleneck ratio 0.333 of 1536
    assert se33.feature_channels["c5"] == 1536 and se33.num_features == 1280
    assert not any(isinstance(b, BoTBlock) and b.mid_attn is not None for s in se33.stages for b in s)

    eca = botnet.create_model("eca_botnext26ts_256")
    assert eca.layer1[0].conv2.groups == 4 and eca.layer3[0].conv2.groups == 16  # 16 channels per group
    assert isinstance(eca.layer2[0].mid_attn, EfficientChannelAttention)
    assert eca.layer2[0].mid_attn.conv.kernel_size == (5,)

    b50 = botnet.create_model("botnet50ts_256")
    assert [[i for i, b in enumerate(s) if isinstance(b, BoTBlock)] for s in b50.stages] == [[], [3], [1, 3, 5], [1]]
    assert isinstance(b50.layer1[0].act3, torch.nn.SiLU)


@pytest.mark.parametrize("impl", ["fold", "bias"])
def test_every_attention_path_computes_timms_function(impl):
    # the fused paths (CUDA's defaults) with the unscaled position term and padded q / k heads
    from botnet.profile import attention_impl

    theirs = timm.create_model("eca_botnext26ts_256", pretrained=False).eval()
    randomise(theirs)
    ours = botnet.create_model("eca_botnext26ts_256").eval()
    load_fetched(ours, Fetched(theirs.state_dict(), "timm", "timm"), strict=True)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad(), attention_impl(ours, impl):
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=0)
