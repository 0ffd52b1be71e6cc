"""Weights from torchvision and timm: the converted model computes what the original computes."""
import pytest
import timm
import torch
import torchvision
from timm.layers.bottleneck_attn import BottleneckAttn

from botnet.api import load
from botnet.cli import main
from botnet.weights.builder import convert_weights
from botnet.weights.convert import bottleneck_attn_state, load_timm_bottleneck_attn, timm_attention
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


@pytest.mark.parametrize("scale_pos_embed", [False, True])
def test_narrow_timm_qk_heads_are_padded_to_the_same_logits(scale_pos_embed):
    # eca_botnext26ts_256: q / k heads of 16 channels, v heads of 64; ours have one width
    theirs = BottleneckAttn(256, feat_size=(6, 5), num_heads=4, dim_head=16, scale_pos_embed=scale_pos_embed).eval()
    with torch.no_grad():
        theirs.pos_embed.height_rel.normal_()
        theirs.pos_embed.width_rel.normal_()
    for ours_scaled in (False, True):
        ours = MHSA2d(256, heads=4, feat_size=(6, 5), scale_pos_embed=ours_scaled).eval()
        load_timm_bottleneck_attn(ours, theirs)
        x = torch.randn(2, 256, 6, 5)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(UserError, match="does not fit an attention layer of 4 heads x 8 channels"):
        timm_attention(theirs.qkv.weight, theirs.pos_embed.height_rel, theirs.pos_embed.width_rel, 4, 8, False)


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
    assert p.class_names == [str(i) for i in range(10)] and p.metadata["converted_from"]["layout"] == "auto"


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


def test_cli_convert_timm_botnet_fills_every_tensor(tmp_path, capsys):
    theirs = timm.create_model("botnet26t_256", pretrained=False, width_factor=0.25).eval()
    _randomise_norms(theirs)
    src, out = tmp_path / "bot26t.pth", tmp_path / "ours.safetensors"
    torch.save(theirs.state_dict(), src)
    assert main(["convert", str(src), "--from", "timm", "--model", "botnet26t_256", "--strict", "--out", str(out),
                 "--set", "widths=[16,32,64,128]", "--set", "stem_width=16"]) == 0
    assert "left 0 at init" in capsys.readouterr().out
    ours = load(out).model
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
    # the same weights into a model of another architecture: refused field by field, nothing written
    other = tmp_path / "other.safetensors"
    assert main(["convert", str(src), "--model", "botnet50ts_256", "--out", str(other),
                 "--set", "widths=[16,32,64,128]", "--set", "stem_width=16"]) == 2
    err = capsys.readouterr().err
    assert "layers: weights (2, 2, 2, 2), model (3, 4, 6, 3)" in err and not other.exists()


def test_unknown_layout_is_refused():
    from botnet.weights.pretrained import Fetched, load_fetched
    from botnet.models import create_model

    with pytest.raises(UserError, match="no tensor fits this model"):
        load_fetched(create_model("resnet_tiny"), Fetched({"encoder.weight": torch.zeros(1)}, "junk.pth"))


def test_cli_convert(tmp_path, capsys):
    theirs = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=3)
    src, out = tmp_path / "tv.pth", tmp_path / "ours.safetensors"
    torch.save(theirs.state_dict(), src)
    names = tmp_path / "names.txt"
    names.write_text("ant\nbee\ncat\n")
    assert main(["convert", str(src), "--model", "botnet50", "--set", "layers=[1,1,1,1]", "--img-size", "64",
                 "--classes", str(names), "--out", str(out)]) == 0
    assert "left 3 at init" in capsys.readouterr().out
    assert load(out).class_names == ["ant", "bee", "cat"]
    # --strict: the attention is not in a ResNet checkpoint; nothing is written
    out2 = tmp_path / "strict.safetensors"
    assert main(["convert", str(src), "--model", "botnet50", "--set", "layers=[1,1,1,1]", "--strict",
                 "--out", str(out2)]) == 2
    assert "not in the weights (--strict)" in capsys.readouterr().err and not out2.exists()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    assert main(["convert", str(garbage), "--model", "resnet50", "--out", str(out2)]) == 2
    assert "garbage.pth: cannot read weights" in capsys.readouterr().err and not out2.exists()
