"""Weights from torchvision and timm: the converted model computes what the original computes."""
import pytest
import timm
import torch
import torchvision
from timm.layers.bottleneck_attn import BottleneckAttn

from botnet.api import load
from botnet.cli import main
from botnet.convert import bottleneck_attn_state, convert_weights, load_timm_bottleneck_attn, map_state_dict
from botnet.errors import UserError
from botnet.layers.attention import MHSA2d

from .conftest import _randomise_norms


@pytest.mark.parametrize("scale_pos_embed", [False, True])
def test_timm_bottleneck_attn_maps_exactly(scale_pos_embed):
    theirs = BottleneckAttn(64, feat_size=(6, 5), num_heads=4, scale_pos_embed=scale_pos_embed).eval()
    with torch.no_grad():  # tables large enough that a wrong scale or index shows
        theirs.pos_embed.height_rel.normal_()
        theirs.pos_embed.width_rel.normal_()
    ours = MHSA2d(64, heads=4, feat_size=(6, 5)).eval()
    load_timm_bottleneck_attn(ours, theirs)
    x = torch.randn(2, 64, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)


def test_timm_tables_are_rescaled_by_sqrt_dim_head():
    state = {"qkv.weight": torch.randn(48, 16, 1, 1), "pos_embed.height_rel": torch.ones(7, 4),
             "pos_embed.width_rel": torch.ones(5, 4)}
    assert torch.equal(bottleneck_attn_state(state)["rel_h"], torch.full((7, 4), 2.0))
    assert torch.equal(bottleneck_attn_state(state, scale_pos_embed=True)["rel_w"], torch.ones(5, 4))
    with pytest.raises(UserError, match="missing 'pos_embed.width_rel'"):
        bottleneck_attn_state({k: v for k, v in state.items() if "width" not in k})


def test_torchvision_resnet_converts_exactly(tmp_path):
    theirs = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=10)
    _randomise_norms(theirs)
    src, out = tmp_path / "tv.pth", tmp_path / "ours.safetensors"
    torch.save(theirs.state_dict(), src)
    report = convert_weights(src, out, "resnet50", layers=(1, 1, 1, 1), strict=True)
    assert not report.skipped and not report.missing
    p = load(out)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(p.model(x), theirs.eval()(x), atol=1e-4, rtol=1e-4)
    assert p.class_names == [str(i) for i in range(10)] and p.metadata["converted_from"]["source"] == "auto"


def test_timm_resnet_into_botnet_leaves_only_attention_at_init(tmp_path):
    theirs = timm.create_model("resnet26", pretrained=False)  # bottleneck (2, 2, 2, 2), 1000 classes
    src, out = tmp_path / "timm.pth", tmp_path / "ours.safetensors"
    torch.save({"state_dict": theirs.state_dict()}, src)  # a wrapped checkpoint is unwrapped
    report = convert_weights(src, out, "botnet50", layers=(2, 2, 2, 2), img_size=64)
    assert report.skipped == ["layer4.0.conv2.weight", "layer4.1.conv2.weight"]
    assert {k.split(".attn.")[1] for k in report.missing} == {"qkv.weight", "rel_h", "rel_w"}
    p = load(out)
    assert len(p.class_names) == 1000 and p.class_names[0] == "tench"  # ImageNet names for 1000 classes
    assert torch.equal(p.model.layer1[0].conv1.weight, theirs.layer1[0].conv1.weight)


def test_timm_botnet26t_blocks_compute_the_same(tmp_path):
    theirs = timm.create_model("botnet26t_256", pretrained=False).eval()
    _randomise_norms(theirs)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "pos_embed" in name:
                p.normal_(std=0.5)
    src, out = tmp_path / "bot26t.pth", tmp_path / "ours.safetensors"
    torch.save(theirs.state_dict(), src)
    report = convert_weights(src, out, "botnet50", layers=(2, 2, 2, 2), bot_layers=(0, 0, 1, 2),
                             bot_shortcut_act=False, img_size=256)
    # the stems differ (timm: three 3x3 convs, ours: the paper's 7x7): everything else maps
    assert all(k.startswith("stem.") for k in report.skipped)
    assert all(k.startswith(("conv1.", "bn1.")) for k in report.missing)
    ours = load(out).model
    x = torch.randn(1, 64, 64, 64)  # a stem output at 256 x 256 input
    with torch.no_grad():
        want = theirs.stages(x)
        got = x
        for stage in ours.stages:
            got = stage(got)
        # sharp attention (large tables) amplifies fp32 rounding: compare relative to the scale
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
        logits, want_logits = ours.forward_head(got), theirs.forward_head(want)
        assert (logits - want_logits).abs().max() <= 1e-4 * want_logits.abs().max()


def test_unknown_layout_is_refused():
    with pytest.raises(UserError, match="neither a torchvision / timm ResNet"):
        map_state_dict({"encoder.weight": torch.zeros(1)})


def test_cli_convert(tmp_path, capsys):
    theirs = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=3)
    src, out = tmp_path / "tv.pth", tmp_path / "ours.safetensors"
    torch.save(theirs.state_dict(), src)
    names = tmp_path / "names.txt"
    names.write_text("ant\nbee\ncat\n")
    assert main(["convert", str(src), "--model", "botnet50", "--option", "layers=[1,1,1,1]", "--img-size", "64",
                 "--classes", str(names), "--out", str(out)]) == 0
    assert "left 3 at init" in capsys.readouterr().out
    assert load(out).class_names == ["ant", "bee", "cat"]
    # --strict: the attention is not in a ResNet checkpoint; nothing is written
    out2 = tmp_path / "strict.safetensors"
    assert main(["convert", str(src), "--model", "botnet50", "--option", "layers=[1,1,1,1]", "--strict",
                 "--out", str(out2)]) == 2
    assert "not in the checkpoint (--strict)" in capsys.readouterr().err and not out2.exists()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    assert main(["convert", str(garbage), "--model", "resnet50", "--out", str(out2)]) == 2
    assert "garbage.pth: cannot read weights" in capsys.readouterr().err and not out2.exists()
