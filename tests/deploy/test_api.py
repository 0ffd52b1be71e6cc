"""botnet.api: load a weights file, predict on paths / PIL images / tensors."""
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from botnet.api import Classification, Detections, config_differences, letterbox, load
from botnet.classification.transforms import eval_transform
from botnet.errors import UserError
from botnet.models import create_model
from botnet.weights import save_weights

from .conftest import CANVAS, CLASS_NAMES


@pytest.fixture(scope="module")
def predictor(cls_weights):
    return load(cls_weights)


def test_load_restores_model_config_and_classes(predictor, cls_weights):
    assert predictor.task == "cls" and predictor.class_names == CLASS_NAMES
    assert predictor.config.bot_layers == (0, 0, 0, 1) and predictor.model.num_classes == 3
    assert predictor.img_size == (128, 128) and predictor.mean == (0.5, 0.45, 0.4)
    assert not predictor.model.training
    reference = create_model("botnet_tiny", num_classes=3)
    reference.load_state_dict(predictor.model.state_dict())  # same architecture, same tensor names


def test_predict_accepts_paths_pil_and_tensors(predictor, tmp_path):
    image = Image.new("RGB", (150, 110), (220, 30, 30))
    path = tmp_path / "red.png"
    image.save(path)
    as_uint8 = pil_to_tensor(image)
    as_float = as_uint8.float() / 255
    results = predictor.predict([path, str(path), image, as_float, as_uint8], topk=2)
    assert len(results) == 5 and all(isinstance(r, Classification) for r in results)
    first = results[0]
    assert len(first.labels) == 2 and first.labels[0] in CLASS_NAMES and first.probs[0] >= first.probs[1]
    # one picture in five forms: one answer
    for r in results[1:]:
        assert r.indices == first.indices
        assert r.probs == pytest.approx(first.probs, abs=1e-4)


def test_predict_applies_the_training_eval_preprocessing(predictor):
    image = torch.rand(3, 90, 170)
    transform = eval_transform((128, 128), 0.875, (0.5, 0.45, 0.4), (0.25, 0.25, 0.25))
    with torch.no_grad():
        want = predictor.model(transform(image)[None]).softmax(1)[0]
    got = predictor.predict(image, topk=3)[0]
    assert got.probs == pytest.approx(want[got.indices].tolist(), abs=1e-5)
    assert got.label == CLASS_NAMES[int(want.argmax())]
    batch = predictor.predict(torch.rand(4, 3, 64, 64), topk=1)  # a (B, C, H, W) batch
    assert len(batch) == 4


def test_predict_rejects_unreadable_images(predictor, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg: unreadable image"):
        predictor.predict(bad)
    with pytest.raises(UserError, match="missing.png: no such image"):
        predictor.predict(tmp_path / "missing.png")
    with pytest.raises(UserError, match="1 or 3 channels"):
        predictor.predict(torch.rand(4, 32, 32))


def test_detection_load_and_predict(det_weights):
    p = load(det_weights)
    assert p.task == "det" and p.class_names == ["cat", "dog"] and p.canvas == CANVAS
    (result,) = p.predict([torch.rand(3, 100, 150)], score_thresh=0.0)
    assert isinstance(result, Detections) and len(result.boxes) > 0
    assert result.masks.shape == (len(result.boxes), 100, 150) and result.masks.dtype == torch.bool
    assert set(result.labels) <= {"cat", "dog"}
    assert float(result.boxes[:, 0::2].max()) <= 150 + 1e-3 and float(result.boxes[:, 1::2].max()) <= 100 + 1e-3
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    assert len(p.predict(torch.rand(3, 100, 150), score_thresh=1.01)[0].boxes) == 0


def test_letterbox_keeps_the_aspect_ratio():
    boxed, scale = letterbox(torch.ones(3, 50, 100), 128)
    assert boxed.shape == (3, 128, 128) and scale == pytest.approx(1.28)
    assert boxed[:, :64].min() > 0.99 and boxed[:, 64:].abs().max() == 0  # padded at the bottom


def test_letterbox_takes_what_predict_takes(tmp_path):
    import numpy as np

    pixels = np.zeros((60, 90, 3), np.uint8)
    pixels[10:40, 20:70] = (200, 100, 50)
    image = Image.fromarray(pixels)
    path = tmp_path / "photo.png"
    image.save(path)
    as_tensor = pil_to_tensor(image)
    forms = {"path": path, "str": str(path), "pil": image, "numpy": pixels, "numpy float": pixels / 255.0,
             "uint8 tensor": as_tensor, "float tensor": as_tensor.float() / 255}
    first, first_scale = letterbox(path, 96)
    assert first.shape == (3, 96, 96) and first.dtype == torch.float32 and first_scale == pytest.approx(96 / 90)
    assert 0 <= float(first.min()) and float(first.max()) <= 1 and first[:, 64:].abs().max() == 0
    for name, form in forms.items():
        boxed, scale = letterbox(form, 96)
        assert scale == first_scale, name
        torch.testing.assert_close(boxed, first, atol=1e-5, rtol=0, msg=name)
    with pytest.raises(UserError, match="numpy image must be"):
        letterbox(np.zeros((4, 60, 90, 3), np.uint8), 96)


def test_predict_takes_numpy_images(predictor):
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    (from_array,) = predictor.predict(pixels, topk=3)
    (from_tensor,) = predictor.predict(torch.from_numpy(pixels).permute(2, 0, 1), topk=3)
    assert from_array.indices == from_tensor.indices
    assert from_array.probs == pytest.approx(from_tensor.probs, abs=1e-6)
    assert len(predictor.predict(np.stack([pixels, pixels]), topk=1)) == 2  # (B, H, W, C): a batch


def test_file_without_description_needs_a_model_name(tmp_path):
    model = create_model("resnet_tiny", num_classes=4)
    path = tmp_path / "bare.safetensors"
    save_weights(model.state_dict(), path)  # tensors only, no metadata
    with pytest.raises(UserError, match="does not say which model"):
        load(path)
    p = load(path, model="resnet_tiny")
    assert p.model.num_classes == 4 and p.class_names == ["0", "1", "2", "3"]


def test_config_mismatch_names_each_field(cls_weights):
    with pytest.raises(UserError, match=r"bot_layers: file \[0, 0, 0, 1\], model \[0, 0, 0, 0\]"):
        load(cls_weights, model="resnet_tiny")
    diffs = config_differences({"heads": 4, "input_size": [64, 64]}, {"heads": 8, "input_size": [128, 128]})
    assert diffs == ["heads: file 4, model 8"]  # the input size is free: tables are resized


def test_bad_metadata(tmp_path):
    model = create_model("resnet_tiny", num_classes=2)
    path = tmp_path / "odd.safetensors"
    save_weights(model, path, {"task": "segmentation"})
    with pytest.raises(UserError, match="odd.safetensors: unknown task 'segmentation'"):
        load(path)
    save_weights(model, path, {"config": {"layers": [1, 1, 1, 1], "wings": 2}})
    with pytest.raises(UserError, match=r"odd.safetensors: the model config .* not usable .*wings"):
        load(path)
    save_weights(model, path, {"class_names": ["a", "b", "c"]})
    with pytest.raises(UserError, match="3 class names in the metadata but the classifier has 2"):
        load(path)
