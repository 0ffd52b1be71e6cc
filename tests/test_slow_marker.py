"""The ``slow`` marker (pyproject.toml) is on the long tests, so that ``-m "not slow"`` is a quick
loop: the training runs, the full-size models, the compiles, the exports and the tests that start
processes. The default run and CI select everything."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

#: module -> the tests that must carry ``slow`` ("*": the whole module)
LONG = {
    "tests.detection.test_det_learns": ["*"],
    "tests.detection.test_det_small_objects": ["*"],
    "tests.detection.test_det_coins": ["test_trained_on_coin_tiles_it_finds_the_held_out_coins"],
    "tests.detection.test_cli_det": ["test_eval_of_the_best_weights_repeats_the_runs_own_evaluation"],
    "tests.engine.test_engine_processes": ["*"],
    "tests.models.test_compile": ["*"],
    "tests.deploy.test_export": ["test_onnx_dynamic_backbone_features", "test_cli_onnx_dynamic_classifier_runs_at_other_sizes",
                                 "test_torch_export_program_is_dynamic", "test_detector_onnx_matches_pytorch",
                                 "test_dynamic_export_of_a_small_classifier_needs_no_size",
                                 "test_detector_onnx_runs_without_runtime_warnings"],
    "tests.test_cli_core": ["test_profile_paper_table_counts_within_the_paper_tolerance"],
    "tests.test_docs_commands": ["test_the_cheap_documented_commands_run_as_written"],
}


def _marks(obj) -> set[str]:
    marks = getattr(obj, "pytestmark", [])
    return {m.name for m in (marks if isinstance(marks, list) else [marks])}


def test_slow_is_declared():
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    markers = config["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)
    addopts = config["tool"]["pytest"]["ini_options"].get("addopts", "").split()
    assert not [a for a in addopts if a == "-m" or (a.startswith("-m") and not a.startswith("--"))]  # CI runs all


@pytest.mark.parametrize("module", sorted(LONG))
def test_long_tests_are_marked_slow(module, monkeypatch):
    engine = Path(__file__).resolve().parent / "engine"
    monkeypatch.syspath_prepend(str(engine))  # the engine tests import their toy task by name
    mod = importlib.import_module(module)
    if LONG[module] == ["*"]:
        assert "slow" in _marks(mod), f"{module}: no module-level pytestmark = pytest.mark.slow"
        return
    unmarked = [name for name in LONG[module] if "slow" not in _marks(getattr(mod, name)) | _marks(mod)]
    assert not unmarked, f"{module}: {unmarked} are not marked slow"


def test_full_size_models_are_slow_and_tiny_ones_are_not():
    mod = importlib.import_module("tests.models.test_models")
    slow = {p.values[0] for p in mod.MODELS if not isinstance(p, str) and "slow" in {m.name for m in p.marks}}
    quick = {p for p in mod.MODELS if isinstance(p, str)}
    assert {"botnet50", "botnet152", "botnet_s1_t7"} <= slow
    assert quick and all(name.endswith("_tiny") for name in quick)
