"""Export to ONNX / torch.export: outputs equal PyTorch's, at sizes other than the export size."""
import json
import warnings

import numpy as np
import onnx
import pytest
import torch

from botnet.api import load
from botnet.cli import main
from botnet.errors import UserError
from botnet.export import ExportCheckError, export_model, run_onnx
from botnet.export_check import synthetic_image
from botnet.layers.attention import MHSA2d
from botnet.models import create_model

from .conftest import CANVAS, CLASS_NAMES, assert_branches_live, randomise_for_comparison

TOL = 1e-3


def assert_close(got, want):
    got = torch.as_tensor(np.asarray(got))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=TOL, rtol=TOL)


@pytest.mark.slow
def test_cli_onnx_dynamic_classifier_runs_at_other_sizes(cls_weights, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(cls_weights), "--format", "onnx", "--out", str(out), "--dynamic"]) == 0
    assert "checked against PyTorch" in capsys.readouterr().out
    model = load(cls_weights).model
    # neither size is the export size (128 x 128); one is not square; batches differ too
    for shape in [(3, 3, 96, 160), (1, 3, 192, 192)]:
        x = torch.randn(shape)
        assert_branches_live(model, x)
        (logits,) = run_onnx(out, x)
        with torch.no_grad():
            assert_close(logits, model(x))
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    info = json.loads(props["botnet"])
    assert info["task"] == "cls" and info["class_names"] == CLASS_NAMES and info["img_size"] == [128, 128]


@pytest.mark.slow
def test_onnx_dynamic_backbone_features(tmp_path):
    model = randomise_for_comparison(create_model("botnet_s1_tiny", num_classes=0)).eval()
    out = tmp_path / "backbone.onnx"
    result = export_model(model, out, features=True, dynamic=True, img_size=(128, 128))
    assert result.outputs == ["c2", "c3", "c4", "c5"] and len(result.checks) == 2
    x = torch.randn(2, 3, 160, 96)
    assert_branches_live(model, x)
    got = run_onnx(out, x)
    with torch.no_grad():
        want = list(model.forward_features(x).values())
    assert [tuple(g.shape) for g in got] == [(2, 64, 40, 24), (2, 128, 20, 12), (2, 256, 10, 6), (2, 512, 10, 6)]
    for g, w in zip(got, want):
        assert_close(g, w)


@pytest.mark.slow
def test_torch_export_program_is_dynamic(cls_weights, tmp_path):
    out = tmp_path / "model.pt2"
    export_model(cls_weights, out, format="torch", dynamic=True)
    with open(out, "rb") as f:
        program = torch.export.load(f)
    model = load(cls_weights).model
    x = torch.randn(1, 3, 64, 224)
    assert_branches_live(model, x)
    with torch.no_grad():
        assert_close(program.module()(x), model(x))


def test_attention_follows_its_input_through_the_torchscript_exporter(tmp_path):
    # the exporter detectors use (torch.onnx.export with dynamo=False), on the layer alone
    m = MHSA2d(64, heads=4, feat_size=(4, 4)).eval()
    with torch.no_grad():
        m.qkv.weight.normal_(std=64**-0.5)
    example, other = torch.randn(1, 64, 4, 4), torch.randn(1, 64, 4, 4)
    out = tmp_path / "mhsa.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (example,), str(out), dynamo=False, opset_version=17, input_names=["images"])
    assert [i.name for i in onnx.load(str(out)).graph.input] == ["images"], "the graph does not read its input"
    (got,) = run_onnx(out, other)
    with torch.no_grad():
        assert_close(got, m(other))


@pytest.mark.slow
def test_detector_onnx_matches_pytorch(det_weights, tmp_path):
    out = tmp_path / "det.onnx"
    result = export_model(det_weights, out)
    assert result.task == "det" and result.outputs == ["boxes", "labels", "scores", "masks"]
    predictor = load(det_weights)
    image = synthetic_image(CANVAS, seed=3)  # not the export's own input
    assert_branches_live(predictor.model.backbone.body, image[None])
    boxes, labels, scores, masks = run_onnx(out, image[None])
    with torch.no_grad():
        want = predictor.model([image])[0]
    assert len(want["boxes"]) > 0
    assert torch.equal(torch.from_numpy(labels), want["labels"])
    # what the export check asks (docs/deployment.md): boxes within 0.01 px, scores within 1e-3,
    # and here every mask probability within 1e-3 as well (the check takes the mean)
    torch.testing.assert_close(torch.from_numpy(boxes), want["boxes"], atol=1e-2, rtol=0)
    torch.testing.assert_close(torch.from_numpy(scores), want["scores"], atol=1e-3, rtol=0)
    assert masks.shape == (len(boxes), 1, CANVAS, CANVAS)
    torch.testing.assert_close(torch.from_numpy(masks), want["masks"], atol=1e-3, rtol=0)


@pytest.mark.slow
def test_detector_onnx_runs_without_runtime_warnings(det_weights, tmp_path, capfd):
    import onnxruntime as ort

    out = tmp_path / "det.onnx"
    export_model(det_weights, out)
    options = ort.SessionOptions()
    options.log_severity_level = 1  # warnings and above: what a user's session prints by default
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    capfd.readouterr()
    boxes, *_ = session.run(None, {"images": synthetic_image(CANVAS, seed=3)[None].numpy()})
    assert len(boxes) > 1  # masks pasted in a loop of several iterations, each once a warning
    assert "VerifyOutputSizes" not in capfd.readouterr().err


@pytest.mark.slow
def test_dynamic_export_of_a_small_classifier_needs_no_size(tmp_path, capsys):
    # a classifier trained at 32 px: the dynamic export runs at 64, the smallest size it takes
    model = create_model("resnet_tiny", num_classes=4, img_size=(32, 32)).eval()
    weights = tmp_path / "best.safetensors"
    from botnet.weights import save_weights

    save_weights(model, weights, {"task": "cls", "class_names": list("abcd"), "img_size": [32, 32]})
    out = tmp_path / "cls.onnx"
    assert main(["export", str(weights), "--format", "onnx", "--out", str(out), "--dynamic"]) == 0
    captured = capsys.readouterr()
    assert "input images ['batch', 3, 'height', 'width']" in captured.out
    assert "exporting cls 2x3x64x64 to onnx" in captured.err and "checking the export" in captured.err
    graph = onnx.load(str(out)).graph
    axes = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert axes == ["batch", 3, "height", "width"]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == ["batch", 4]
    x = torch.randn(3, 3, 96, 64)
    with torch.no_grad():
        assert_close(run_onnx(out, x)[0], load(weights).model(x))


@pytest.mark.parametrize("model_size, export_size", [((32, 32), (64, 64)), ((100, 64), (128, 64)),
                                                     ((224, 224), (224, 224)), ((5000, 40), (4096, 64))])
def test_dynamic_export_size_is_the_smallest_valid_one_not_below_the_model(model_size, export_size):
    from botnet.export_check import dynamic_size

    assert dynamic_size(model_size) == export_size


def test_export_check_tolerances_are_the_documented_ones():
    """docs/deployment.md states what an export is checked against; these are those numbers."""
    from botnet.export_check import check_detections, max_diff

    want = [torch.tensor([[0.5, -200.0, 3.0]])]
    for delta, ok in [(0.9e-3, True), (1.1e-3, False)]:  # classifiers, backbones: 1e-3 + 1e-3 |value|
        for i, scale in enumerate((0.5, 200.0, 3.0)):
            got = want[0].clone()
            got[0, i] += delta * (1 + scale)
            if ok:
                max_diff([got.numpy()], want, "x")
            else:
                with pytest.raises(ExportCheckError):
                    max_diff([got.numpy()], want, "x")
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 128.0, 128.0]])
    labels, scores = torch.tensor([1, 2]), torch.tensor([0.9, 0.4])
    masks = torch.rand(2, 1, 16, 16)
    det = [boxes, labels, scores, masks]

    def check(**changes):
        got = [changes.get(k, v) for k, v in zip(("boxes", "labels", "scores", "masks"), det)]
        check_detections([g.numpy() for g in got], det, "det")

    check(boxes=boxes + 0.009, scores=scores - 0.0009, masks=masks + 0.0009)  # within: boxes 0.01 px,
    for bad in [dict(boxes=boxes + 0.011), dict(scores=scores + 0.0011),  # scores 1e-3, masks 1e-3 on
                dict(masks=masks + 0.0011), dict(labels=labels.flip(0)),  # average; labels and count equal
                dict(boxes=boxes[:1], labels=labels[:1], scores=scores[:1], masks=masks[:1])]:
        with pytest.raises(ExportCheckError):
            check(**bad)
    # a mask may differ by more than 1e-3 in a few pixels, as long as the mean stays within
    spot = masks.clone()
    spot[0, 0, 0, 0] += 0.1
    check(masks=spot)


# -- bad input: clear errors, nothing written -------------------------------------------------------


def run_cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_unknown_model(tmp_path, capsys):
    out = tmp_path / "x.onnx"
    code, err = run_cli(["export", "botnet_huge", "--out", str(out)], capsys)
    assert code == 2 and "'botnet_huge' is neither a weights file nor a registered model" in err
    assert "botnet_tiny" in err  # the known models are listed
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_weights(tmp_path, capsys):
    out = tmp_path / "x.onnx"
    code, err = run_cli(["export", str(tmp_path / "nope.safetensors"), "--out", str(out)], capsys)
    assert code == 2 and "nope.safetensors: no such weights file" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    code, err = run_cli(["export", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "bad.safetensors" in err and "not a readable safetensors file" in err
    assert not out.exists()


def test_truncated_weights(cls_weights, tmp_path, capsys):
    cut = tmp_path / "cut.safetensors"
    data = cls_weights.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    code, err = run_cli(["export", str(cut), "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and "cut.safetensors" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.safetensors"]


def test_config_mismatch_names_the_field(cls_weights, tmp_path, capsys):
    code, err = run_cli(["export", str(cls_weights), "--model", "resnet_tiny", "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2
    assert "different architecture than 'resnet_tiny'" in err and "bot_layers: file [0, 0, 0, 1], model [0, 0, 0, 0]" in err
    assert list(tmp_path.iterdir()) == []


def test_dynamic_size_must_be_a_multiple_of_32(tmp_path):
    with pytest.raises(UserError, match="multiple of 32"):
        export_model("resnet_tiny", tmp_path / "x.onnx", img_size=(100, 128), dynamic=True)


def test_detector_refuses_dynamic_and_torch_format(det_weights, tmp_path):
    with pytest.raises(UserError, match="fixed canvas"):
        export_model(det_weights, tmp_path / "x.onnx", dynamic=True)
    with pytest.raises(UserError, match="ONNX only"):
        export_model(det_weights, tmp_path / "x.pt2", format="torch")
    assert list(tmp_path.iterdir()) == []


def test_failed_check_leaves_nothing_behind(tmp_path, monkeypatch):
    import botnet.export_check as check
    import botnet.export_formats as formats

    monkeypatch.setattr(formats, "write_onnx_dynamo", lambda *a, **k: a[2].write_bytes(b"graph"))
    monkeypatch.setattr(check, "run_onnx", lambda path, x: [np.zeros((x.shape[0], 1000), np.float32) + 5.0])
    out = tmp_path / "x.onnx"
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        export_model("resnet_tiny", out)
    assert list(tmp_path.iterdir()) == []


def test_a_dynamic_export_is_checked_at_a_second_size(tmp_path, monkeypatch):
    # a stand-in for onnxruntime that reproduces PyTorch at the export size only, as a graph that
    # kept its input shape constant would: the fixed export passes, the dynamic one must not
    import botnet.export_check as check
    import botnet.export_formats as formats

    graph = {}

    def write(wrapper, example, tmp, *args):
        graph.update(wrapper=wrapper, shape=tuple(example.shape))
        tmp.write_bytes(b"graph")

    def run(path, x):
        wrong = 0.0 if tuple(x.shape) == graph["shape"] else 1.0
        return [y.numpy() + wrong for y in check.reference(graph["wrapper"], x)]

    monkeypatch.setattr(formats, "write_onnx_dynamo", write)
    monkeypatch.setattr(check, "run_onnx", run)
    fixed = export_model("resnet_tiny", tmp_path / "fixed.onnx", img_size=(64, 64))
    assert [shape for shape, _ in fixed.checks] == [(1, 3, 64, 64)]
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        export_model("resnet_tiny", tmp_path / "dynamic.onnx", img_size=(64, 64), dynamic=True)
    assert not (tmp_path / "dynamic.onnx").exists()
    shapes = check.check_inputs(torch.zeros(1, 3, 64, 64), dynamic=True)
    (b, _, h, w) = shapes[1].shape
    assert b != 1 and h != 64 and w != 64 and h != w  # another batch, a non-square size


def test_onnx_export_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    from botnet.errors import UserError
    from botnet.export import export_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(UserError, match=r"needs onnxruntime: pip install 'botnet\[export\]'"):
        export_model("botnet_tiny", tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()
