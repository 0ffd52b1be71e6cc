"""Helpers of the hostile-input tests: the command line run as a user runs it (exit code and
stderr, never a traceback), a small COCO set to corrupt."""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
from pathlib import Path

from botnet.cli import main

#: train det flags that keep a run (were it to start) tiny
DET_FAST = ["--config", "demo_shapes", "--img-size", "64", "--workers", "0", "--epochs", "1", "--batch-size", "2",
            "--set", "log.progress=never", "--set", "model.fpn_channels=16", "--set", "model.box_representation=32",
            "--set", "model.mask_head_channels=[16]"]
#: train cls flags for a run of seconds
CLS_FAST = ["--model", "botnet_s1_tiny", "--img-size", "32", "--workers", "0", "--batch-size", "16",
            "--set", "log.tensorboard=false", "--set", "log.progress=never", "--set", "log.plot=false"]


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of ``botnet ARGV``; an argparse error (SystemExit) counts as its code.
    An exception other than a user error escapes and fails the test."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def listing(folder: Path) -> list[str]:
    """Every path under ``folder`` (relative), so that a test can say nothing was written."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def box_ann(aid, image_id=1, cat=1, bbox=(2, 3, 6, 5), **extra):
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": list(bbox), "iscrowd": 0,
            "area": bbox[2] * bbox[3], **extra}


@dataclasses.dataclass
class CocoSet:
    """Two 32x24 images under ``images`` and an instances file to rewrite at will."""

    root: Path
    images: Path
    ann: Path

    def write(self, annotations=None, images=None, categories=None) -> Path:
        doc = {
            "images": images if images is not None else [
                {"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                {"id": 2, "file_name": "b.png", "width": 32, "height": 24}],
            "annotations": annotations if annotations is not None else [box_ann(1), box_ann(2, image_id=2)],
            "categories": categories if categories is not None else [{"id": 1, "name": "thing"}],
        }
        self.ann.write_text(json.dumps(doc))
        return self.ann


def full_disk(monkeypatch, module, name):
    """Files whose name holds ``name``, opened for writing through ``module``'s ``open``, fail as
    on a full disk (ENOSPC from the write or the flush)."""
    real = open

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and name in os.path.basename(str(path)):
            return io.BufferedWriter(Full())
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(module, "open", fake_open, raising=False)
