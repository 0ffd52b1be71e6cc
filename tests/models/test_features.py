"""timm's features_only convention over every registered model: the maps of the levels asked for,
as a list, described by feature_info (channels, reduction, module)."""
import pytest
import torch

import botnet
from tests.models.test_models import MODELS


@pytest.mark.parametrize("name", MODELS)
def test_features_only_returns_the_levels_feature_info_describes(name):
    torch.manual_seed(0)
    full = botnet.create_model(name, num_classes=0).eval()
    net = botnet.create_model(name, features_only=True, out_indices=(0, 1, 2, 3, 4)).eval()
    net.model.load_state_dict(full.state_dict())
    info = net.feature_info
    assert len(info) == 5 and info.reduction()[1:] == [full.feature_reductions[k] for k in ("c2", "c3", "c4", "c5")]
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        maps = net(x)
        reference = full.forward_features(x)
        if full.final_conv is not None:  # timm's last level: after the final 1x1 conv
            reference["c5"] = full.final_conv(reference["c5"])
    modules = dict(net.model.named_modules())
    assert len(maps) == 5
    for f, d in zip(maps, info.get_dicts()):
        assert f.shape[1] == d["num_chs"]
        assert f.shape[2:] == (-(-64 // d["reduction"]), -(-48 // d["reduction"]))
        assert d["module"] in modules
    for f, key in zip(maps[1:], ("c2", "c3", "c4", "c5")):
        torch.testing.assert_close(f, reference[key])
    assert isinstance(net.model.fc, torch.nn.Identity)  # no classifier in the extractor


def test_out_indices_pick_levels_and_negative_ones_count_from_the_last():
    net = botnet.create_model("botnet_tiny", features_only=True, out_indices=(2, -1))
    assert net.out_indices == (2, 4) and net.feature_info.module_name() == ["layer2", "layer4"]
    maps = net(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, net.feature_info.channels(0), 8, 8),
                                              (2, net.feature_info.channels(1), 2, 2)]
    for bad in [(5,), (3, 1), ()]:
        with pytest.raises(ValueError, match="out_indices"):
            botnet.create_model("botnet_tiny", features_only=True, out_indices=bad)


def test_feature_info_agrees_with_timm_for_the_models_timm_has():
    timm = pytest.importorskip("timm")
    shared = [n for n in botnet.list_models() if timm.is_model(n)]
    assert "resnet50" in shared and "botnet26t_256" in shared
    for name in shared:
        with torch.device("meta"):
            ours = botnet.create_model(name, features_only=True).feature_info
            theirs = timm.create_model(name, pretrained=False, features_only=True).feature_info
        assert (ours.channels(), ours.reduction()) == (theirs.channels(), theirs.reduction()), name
