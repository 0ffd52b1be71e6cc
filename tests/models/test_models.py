"""Every registered model: forward and backward at a small square and a non-square size."""
import pytest
import torch

import botnet
from botnet.errors import UserError
from botnet.layers import BoTBlock, MHSA2d
from botnet.models import get_model_config

ALL = botnet.list_models()
#: the full-size models take 10-50 s each here: slow; the tiny variants keep the quick loop honest
MODELS = [name if name.endswith("_tiny") else pytest.param(name, marks=pytest.mark.slow) for name in ALL]


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    torch.manual_seed(0)
    return botnet.create_model(request.param, num_classes=7)


def test_forward_backward_any_size(model):
    for size in [(32, 32), (48, 32)]:  # small and non-square; c5 down to 1x1
        x = torch.randn(2, 3, *size)
        feats = model.forward_features(x)
        assert list(feats) == ["c2", "c3", "c4", "c5"]
        for key, f in feats.items():
            assert f.shape[1] == model.feature_channels[key]
            reduction = model.feature_reductions[key]
            assert f.shape[2:] == (-(-size[0] // reduction), -(-size[1] // reduction))
        logits = model.forward_head(feats["c5"])
        assert logits.shape == (2, 7)
        logits.float().square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad(set_to_none=True)


def test_structure_follows_spec():
    m = botnet.create_model("botnet50")
    blocks = list(m.layer4)
    assert all(isinstance(b, BoTBlock) for b in blocks)
    assert not any(isinstance(b, BoTBlock) for s in (m.layer1, m.layer2, m.layer3) for b in s)
    first = blocks[0]
    assert first.attn.feat_size == (64, 64) and blocks[1].attn.feat_size == (32, 32)  # pre-pool size
    assert isinstance(first.pool, torch.nn.AvgPool2d)
    assert first.attn.heads == 4 and first.attn.dim_head == 128
    assert isinstance(first.downsample[-1], torch.nn.ReLU)  # the reference code's shortcut activation
    assert all(b.bn3.weight.abs().sum() == 0 for b in blocks)  # zero-initialised last BN
    assert m.feature_reductions == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def test_s1_and_t_models():
    t3 = botnet.create_model("botnet_s1_t3")
    assert t3.feature_reductions["c5"] == 16
    assert all(isinstance(b, BoTBlock) for b in t3.layer4) and len(t3.layer4) == 6
    assert all(b.se is not None and b.se.fc1.out_channels == round(b.out_channels * 0.0625)
               for s in t3.stages for b in s)
    assert isinstance(t3.act1, torch.nn.SiLU)
    assert t3.layer4[0].attn.feat_size == (14, 14)
    assert get_model_config("botnet_s1_t7").img_size == (384, 384)


def test_overrides_and_defaults():
    m = botnet.create_model("botnet_tiny", num_classes=0, drop_path_rate=0.1, drop_rate=0.2, img_size=96,
                            bot_shortcut_act=False)
    assert m.default_cfg["input_size"] == (3, 96, 96)
    assert m(torch.randn(1, 3, 96, 96)).shape == (1, m.num_features)
    assert m.layer4[0].downsample[-1].__class__ is not torch.nn.ReLU
    assert m.layer4[0].drop_path.p == pytest.approx(0.1)
    m.reset_classifier(5)
    assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_unknown_model_lists_known_names():
    with pytest.raises(UserError, match="known models: .*botnet50"):
        botnet.create_model("botnet51")
    with pytest.raises(UserError, match="unknown model option"):
        botnet.create_model("botnet50", n_heads=8)


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 1, 64, 64)])
def test_bad_input_shape(shape):
    m = botnet.create_model("resnet_tiny")
    with pytest.raises(ValueError, match=r"expects a \(B, 3, H, W\)"):
        m(torch.randn(*shape))


def test_every_mhsa_sized_by_its_input_map():
    m = botnet.create_model("botnet_tiny", img_size=(96, 160))
    sizes = [mod.feat_size for mod in m.modules() if isinstance(mod, MHSA2d)]
    assert sizes == [(6, 10)]  # c5 input = 96/16 x 160/16
