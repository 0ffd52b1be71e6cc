import torch
import torchvision
import pytest

import botnet
from botnet.errors import UserError
from botnet.weights import read_metadata
from botnet.weights.pretrained import load_pretrained


def test_round_trip_with_metadata(tmp_path):
    m = botnet.create_model("botnet_tiny", num_classes=3)
    path = botnet.save_weights(m, tmp_path / "w.safetensors", {"classes": ["a", "b", "c"]})
    m2 = botnet.create_model("botnet_tiny", num_classes=3)
    meta = botnet.load_weights(m2, path)
    assert meta["classes"] == ["a", "b", "c"] and meta["model"] == "botnet_tiny" and meta["num_classes"] == 3
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert read_metadata(path)["config"]["layers"] == [1, 1, 1, 1]
    assert not list(tmp_path.glob("*.tmp"))


def test_load_at_other_feat_size_resizes_tables(tmp_path):
    small = botnet.create_model("botnet_tiny", img_size=64)  # c5 tables for 4x4
    botnet.save_weights(small, tmp_path / "w.safetensors")
    big = botnet.create_model("botnet_tiny", img_size=128)  # 8x8
    botnet.load_weights(big, tmp_path / "w.safetensors")
    a_small, a_big = small.layer4[0].attn, big.layer4[0].attn
    assert a_big.rel_h.shape == (15, a_big.dim_head)
    torch.testing.assert_close(a_big.rel_h[0], a_small.rel_h[0])
    torch.testing.assert_close(a_big.rel_h[7], a_small.rel_h[3])  # offset 0 stays offset 0
    back = botnet.create_model("botnet_tiny", img_size=64)
    botnet.load_weights(back, tmp_path / "w.safetensors")
    assert torch.equal(back.layer4[0].attn.rel_w, a_small.rel_w)


def test_torchvision_resnet50_fills_botnet50(tmp_path):
    tv = torchvision.models.resnet50()
    for mod in tv.modules():  # make BN statistics distinguishable from a fresh init
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_()
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    m = botnet.create_model("botnet50", img_size=224)
    report = load_pretrained(m, path)
    ours = m.state_dict()
    for key, value in tv.state_dict().items():
        if ".conv2." in key and key.startswith("layer4"):
            assert key in report.skipped
        else:
            assert torch.equal(ours[key], value), key
    assert sorted(report.skipped) == [f"layer4.{i}.conv2.weight" for i in range(3)]
    assert all(".attn." in k for k in report.missing) and len(report.missing) == 9
    assert "layer4.0.attn.qkv.weight" in report.summary()


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    m = botnet.create_model("botnet_tiny", num_classes=3)
    with pytest.raises(UserError, match="bad.safetensors"):
        botnet.load_weights(m, bad)
    with pytest.raises(UserError, match="no such weights file"):
        botnet.load_weights(m, tmp_path / "missing.safetensors")
    other = botnet.create_model("botnet_tiny", num_classes=5)
    botnet.save_weights(other, tmp_path / "five.safetensors")
    with pytest.raises(UserError, match="for 5 classes, the model has 3"):
        botnet.load_weights(m, tmp_path / "five.safetensors")
