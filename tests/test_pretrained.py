"""Weights by name through the libraries' own caches, offline: the tests put files with random
weights where torchvision / timm / huggingface_hub expect them (temporary TORCH_HOME / HF_HOME) and
check that the model got exactly those tensors, and that an empty cache fails at once, by name."""
import os
import pickle
import socket
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import botnet
from botnet.cli import main
from botnet.errors import UserError
from botnet.weights.pretrained import imagenet_source_for, load_pretrained
from botnet.weights import save_weights

timm = pytest.importorskip("timm")

#: a ResNet-50 / BoTNet-50 of the real depth at 1/8 of the width (the file layout is all that matters)
NARROW_R50 = {"widths": (8, 16, 32, 64), "stem_width": 8}
#: our botnet26t_256 at timm's width_factor=0.25
NARROW_T = {"widths": (16, 32, 64, 128), "stem_width": 16}
TV_FILE = os.path.basename(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url)
BOT26 = "timm/botnet26t_256.c1_in1k"


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights under which attention has structure, as after training: every matrix (conv,
    linear, q / k / v, position table) at unit gain, N(0, 1 / fan_in), so that q . k and q . r are of
    unit scale; norm scales in 0.5 .. 1.5. A small-scale draw would leave attention near-uniform
    (a mean over the map), where a pool before the attention or swapped tables change nothing."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=g) * (t[0].numel() ** -0.5))
            elif "running_var" in name or name.endswith(".weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_CACHE", "BOTNET_OFFLINE", "HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup fails, as on a machine without network; the attempts are recorded."""
    attempts = []

    def refuse(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (no network in the tests)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def torch_hub_file(caches: Path, name: str = TV_FILE) -> Path:
    path = caches / "torch" / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def put_in_hf_cache(caches: Path, repo: str, state: dict, filename: str = "model.safetensors") -> Path:
    """A file where huggingface_hub keeps it: refs/main names a snapshot folder holding the file."""
    root = caches / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    path = root / "snapshots" / commit / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def narrow_timm_botnet26t() -> torch.nn.Module:
    return randomise(timm.create_model("botnet26t_256", pretrained=False, width_factor=0.25)).eval()


def test_torchvision_enum_fills_the_resnet_layers_from_the_torch_hub_cache(caches, no_network):
    donor = randomise(botnet.create_model("resnet50", **NARROW_R50))
    torch.save(donor.state_dict(), torch_hub_file(caches))
    model = botnet.create_model("botnet50", img_size=64, pretrained="torchvision:ResNet50_Weights.IMAGENET1K_V2",
                                **NARROW_R50)
    ours, report = model.state_dict(), model.load_report
    for key, value in donor.state_dict().items():
        if key.startswith("layer4.") and ".conv2." in key:
            assert key in report.skipped  # the attention takes the 3x3 conv's place
        else:
            assert torch.equal(ours[key], value), key
    assert sorted({k.split(".attn.")[1] for k in report.missing}) == ["qkv.weight", "rel_h", "rel_w"]
    assert str(torch_hub_file(caches)) in report.origin and no_network == []  # read from the cache, no lookup


def test_imagenet_is_the_same_depth_torchvision_resnet_or_timms_own(caches, no_network):
    donor = randomise(botnet.create_model("resnet50", **NARROW_R50))
    torch.save(donor.state_dict(), torch_hub_file(caches))
    model = botnet.create_model("resnet50", pretrained="imagenet", **NARROW_R50)
    assert model.load_report.origin.startswith("torchvision:ResNet50_Weights.IMAGENET1K_V2 (")
    assert not model.load_report.missing and not model.load_report.skipped
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), donor.state_dict().values()))
    out = caches / "r50.safetensors"
    assert main(["convert", "imagenet", "--model", "resnet50", "--strict", "--out", str(out),
                 "--set", "widths=[8,16,32,64]", "--set", "stem_width=8"]) == 0
    assert botnet.load(out).class_names[0] == "tench"  # ImageNet's names for the 1000 classes
    assert imagenet_source_for("botnet152") == "torchvision:ResNet152_Weights.IMAGENET1K_V2"
    assert imagenet_source_for("botnet26t_256") == "timm:botnet26t_256.c1_in1k"
    with pytest.raises(UserError, match="'imagenet' has no weights for resnet200"):
        botnet.create_model("resnet200", pretrained="imagenet")


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_imagenet_names_the_resnet_of_the_same_depth(depth):
    for name in (f"resnet{depth}", f"botnet{depth}"):
        source = imagenet_source_for(name)
        assert source.startswith(f"torchvision:ResNet{depth}_Weights."), (name, source)


def test_timm_botnet_from_the_hf_cache_computes_what_timm_computes(caches, no_network):
    theirs = narrow_timm_botnet26t()
    put_in_hf_cache(caches, BOT26, theirs.state_dict())
    ours = botnet.create_model("botnet26t_256", pretrained="timm:botnet26t_256.c1_in1k", **NARROW_T).eval()
    assert not ours.load_report.missing and not ours.load_report.skipped
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
    # without the tag: timm's default weights; another class count: a new classifier, reported
    ten = botnet.create_model("botnet26t_256", num_classes=10, pretrained="timm:botnet26t_256", **NARROW_T)
    assert ten.load_report.reinitialised == ["10 classes; the weights have 1000"]
    assert "classifier re-initialised" in ten.load_report.summary()
    assert torch.equal(ten.layer4[1].attn.qkv.weight, ours.layer4[1].attn.qkv.weight)
    assert no_network == []


def test_timm_resnet_from_a_pytorch_model_bin_in_the_hf_cache(caches, no_network):
    donor = randomise(botnet.create_model("resnet50", **NARROW_R50))
    put_in_hf_cache(caches, "timm/resnet50.a1_in1k", donor.state_dict(), "pytorch_model.bin")
    model = botnet.create_model("botnet50", img_size=64, pretrained="timm:resnet50.a1_in1k", **NARROW_R50)
    assert torch.equal(model.layer3[5].conv2.weight, donor.layer3[5].conv2.weight)
    assert len(model.load_report.skipped) == 3 and no_network == []


def test_local_files_in_every_layout(tmp_path):
    theirs = narrow_timm_botnet26t()
    torch.save({"state_dict": theirs.state_dict()}, tmp_path / "timm.pth")  # timm's layout, wrapped
    ours = botnet.create_model("botnet26t_256", pretrained=str(tmp_path / "timm.pth"), **NARROW_T).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
    donor = randomise(torchvision.models.resnet50(num_classes=10))
    save_file(donor.state_dict(), str(tmp_path / "tv.safetensors"))  # torchvision's layout
    resnet = botnet.create_model("resnet50", num_classes=10, pretrained=str(tmp_path / "tv.safetensors"))
    assert all(torch.equal(resnet.state_dict()[k], v) for k, v in donor.state_dict().items())
    save_weights(ours, tmp_path / "ours.safetensors")  # ours
    again = botnet.create_model("botnet26t_256", pretrained=str(tmp_path / "ours.safetensors"), **NARROW_T)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_detection_backbone_starts_pretrained_attention_included(caches, no_network):
    from botnet.detection.maskrcnn import build_maskrcnn

    theirs = narrow_timm_botnet26t()
    put_in_hf_cache(caches, BOT26, theirs.state_dict())
    det = build_maskrcnn("botnet26t_256", 2, canvas=128, backbone_weights="timm:botnet26t_256.c1_in1k",
                         options=NARROW_T, fpn_channels=32, box_representation=64, mask_head_channels=(32,))
    body = det.backbone.body
    assert body.load_report.missing == [] and sorted(body.load_report.skipped) == ["fc.bias", "fc.weight"]
    timm_attn = theirs.stages[3][1].self_attn
    assert torch.equal(body.layer4[1].attn.qkv.weight, timm_attn.qkv.weight)
    # tables for timm's 8 x 8 c5 map, read for the 4 x 4 map of a 128 canvas: the same offsets' rows
    assert torch.equal(body.layer4[1].attn.rel_h, timm_attn.pos_embed.height_rel[4:11])
    assert torch.equal(body.stem.conv1.conv.weight, theirs.stem.conv1.conv.weight)


def test_train_cls_fine_tunes_from_timm_weights_with_a_new_head(caches, no_network, tmp_path, capsys):
    from botnet.data.cls_synthetic import make_image_folder

    put_in_hf_cache(caches, BOT26, narrow_timm_botnet26t().state_dict())
    data = make_image_folder(tmp_path / "data", num_classes=3, train_per_class=4, val_per_class=2, size=32, seed=0)
    options = '{"widths": [16, 32, 64, 128], "stem_width": 16}'
    code = main(["train", "cls", "--data", str(data), "--out", str(tmp_path / "run"), "--model", "botnet26t_256",
                 "--weights", "timm:botnet26t_256.c1_in1k", "--set", f"model.options={options}", "--img-size", "32",
                 "--epochs", "1", "--batch-size", "6", "--workers", "0", "--set", "log.tensorboard=false",
                 "--set", "log.progress=never"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "loaded 192 tensors" in err and "classifier re-initialised (3 classes; the weights have 1000)" in err


def test_train_det_backbone_from_timm_weights(caches, no_network, tmp_path, capsys):
    from botnet.data.shapes import make_shapes_dataset

    put_in_hf_cache(caches, BOT26, narrow_timm_botnet26t().state_dict())
    shapes = make_shapes_dataset(tmp_path / "shapes", train=4, val=2, img_size=64, seed=1)
    code = main(["train", "det", "--data", str(shapes["train_images"]), "--ann", str(shapes["train_ann"]),
                 "--out", str(tmp_path / "run"), "--model", "botnet26t_256", "--backbone-weights",
                 "timm:botnet26t_256.c1_in1k", "--config", "demo_shapes", "--img-size", "64", "--epochs", "1",
                 "--batch-size", "2", "--workers", "0", "--set", "log.progress=never", "--set", "model.norm=frozen",
                 "--set", "model.options={widths: [16, 32, 64, 128], stem_width: 16}", "--set", "model.fpn_channels=32",
                 "--set", "model.box_representation=64", "--set", "model.mask_head_channels=[32]"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "timm:botnet26t_256.c1_in1k" in err and "left 0 at init" in err


def test_empty_cache_without_network_fails_at_once_naming_what_to_place(caches, no_network, capsys):
    out = caches / "out.safetensors"
    assert main(["convert", "timm:botnet26t_256.c1_in1k", "--model", "botnet26t_256", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    hub = caches / "hf" / "hub"
    assert "timm:botnet26t_256.c1_in1k: not in the cache" in err and str(hub) in err
    assert str(hub / "models--timm--botnet26t_256.c1_in1k" / "snapshots" / "main" / "model.safetensors") in err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(UserError) as e:
        botnet.create_model("botnet50", pretrained="imagenet")
    assert str(torch_hub_file(caches)) in str(e.value) and "unreachable" in str(e.value)
    assert no_network  # one lookup, refused: no download was attempted after it


def test_offline_switch_skips_the_network_entirely(caches, monkeypatch):
    monkeypatch.setenv("BOTNET_OFFLINE", "1")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("network used despite BOTNET_OFFLINE"))
    with pytest.raises(UserError, match="BOTNET_OFFLINE is set"):
        botnet.create_model("resnet50", pretrained="torchvision:ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(UserError, match="BOTNET_OFFLINE is set"):
        botnet.create_model("botnet26t_256", pretrained="timm:botnet26t_256.c1_in1k")


def test_corrupt_cache_files_are_named(caches, no_network):
    torch_hub_file(caches).write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(UserError, match=f"the cached file .*{TV_FILE} is unreadable .*delete it"):
        botnet.create_model("resnet50", pretrained="imagenet")
    bad = put_in_hf_cache(caches, BOT26, {"x": torch.zeros(1)})
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="model.safetensors is unreadable"):
        botnet.create_model("botnet26t_256", pretrained="timm:botnet26t_256.c1_in1k")


@pytest.mark.parametrize("source, message", [
    ("s3:bucket/resnet50.pth", "unknown weights source 's3:'"),
    ("torchvision:ResNet50_Weights.IMAGENET1K_V9", "close matches: ResNet50_Weights.IMAGENET1K_V2"),
    ("torchvision:ResNet05_Weights.IMAGENET1K_V2", "close matches: ResNet50_Weights.IMAGENET1K_V2"),
    ("timm:botnet26t_265.c1_in1k", "unknown timm weights .*close matches: botnet26t_256.c1_in1k"),
    ("timm:botnet26t_256.in22k", r"Invalid pretrained tag \(in22k\)"),
    ("timm:botnet50ts_256", "timm publishes no weights for botnet50ts_256.untrained"),
    ("missing.pth", "missing.pth: weights file not found"),
])
def test_bad_sources_are_named(source, message, caches, no_network):
    with pytest.raises(UserError, match=message):
        load_pretrained(botnet.create_model("resnet_tiny"), source)


def test_weights_for_another_architecture_say_what_differs(caches, no_network, capsys):
    deeper = botnet.create_model("resnet101", **NARROW_R50)
    torch.save(deeper.state_dict(), torch_hub_file(caches, os.path.basename(
        torchvision.models.ResNet101_Weights.IMAGENET1K_V2.url)))
    out = caches / "out.safetensors"
    assert main(["convert", "torchvision:ResNet101_Weights.IMAGENET1K_V2", "--model", "resnet50", "--out", str(out),
                 "--set", "widths=[8,16,32,64]", "--set", "stem_width=8"]) == 2
    err = capsys.readouterr().err
    assert "they are for our model 'resnet101'" in err and "layers: weights (3, 4, 23, 3), model (3, 4, 6, 3)" in err
    assert not out.exists()
    with pytest.raises(UserError, match=r"widths: weights \(8, 16, 32, 64\), model \(64, 128, 256, 512\)"):
        botnet.create_model("resnet101", pretrained="torchvision:ResNet101_Weights.IMAGENET1K_V2")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_runs_code_from_a_file(tmp_path):
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv1.weight": _Payload(marker)}, f, protocol=2)
    with pytest.raises(UserError, match="evil.pth: cannot read weights"):
        botnet.create_model("resnet_tiny", pretrained=str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_bad_source_in_training_exits_2_and_writes_nothing(tmp_path, capsys):
    from botnet.data.cls_synthetic import make_image_folder

    data = make_image_folder(tmp_path / "data", num_classes=2, train_per_class=2, val_per_class=1, size=32, seed=0)
    run = tmp_path / "run"
    assert main(["train", "cls", "--data", str(data), "--out", str(run), "--model", "resnet_tiny",
                 "--weights", "timm:botnet26t_265", "--epochs", "1", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "close matches: botnet26t_256.c1_in1k" in err and "Traceback" not in err and not run.exists()


@pytest.mark.slow
def test_small_data_recipe_starts_from_imagenet_by_name(caches, no_network, tmp_path, capsys):
    """det_finetune_small as shipped (botnet50, backbone_weights: imagenet, frozen BN, stem and c2
    frozen) reads torchvision's ResNet-50 file from the torch hub cache, offline."""
    from botnet.data.shapes import make_shapes_dataset

    torch.save(randomise(botnet.create_model("resnet50", **NARROW_R50)).state_dict(), torch_hub_file(caches))
    shapes = make_shapes_dataset(tmp_path / "shapes", train=4, val=2, img_size=64, seed=1)
    code = main(["train", "det", "--config", "det_finetune_small", "--data", str(shapes["train_images"]),
                 "--ann", str(shapes["train_ann"]), "--out", str(tmp_path / "run"), "--img-size", "64",
                 "--anchors", "auto", "--workers", "0", "--batch-size", "2", "--epochs", "1",
                 "--set", "log.progress=never", "--set", "model.options={widths: [8, 16, 32, 64], stem_width: 8}",
                 "--set", "model.fpn_channels=32", "--set", "model.box_representation=64",
                 "--set", "model.mask_head_channels=[32]"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "backbone weights imagenet" in err and "torchvision:ResNet50_Weights.IMAGENET1K_V2" in err, err
    assert "anchors fitted to" in err and no_network == []
