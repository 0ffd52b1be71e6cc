"""Config keys that moved to one home: an old key still loads, with one line naming the new key.

Each setting has one key (``model.norm: syncbn``, not also ``dist.sync_bn``; ``data.img_size``,
not also ``model.options.input_size``). A config class lists the keys it replaced in its
``renamed`` table; recipes, overrides and the saved config of an earlier run are read through it,
so existing runs and recipes keep working. An old key at the value earlier versions wrote for
every run (``dist.sync_bn: false`` in a saved config.yaml) is dropped without a word.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from botnet.errors import deprecation_line

#: what ``Renamed.convert`` returns when the new key needs no change
UNCHANGED = object()


def _same(value: Any, data: dict) -> Any:
    return value


@dataclass(frozen=True)
class Renamed:
    #: dotted keys: the one an earlier version read, and the setting's one home now
    old: str
    new: str
    #: the new key's value from the old one and the whole config (or UNCHANGED)
    convert: Callable[[Any, dict], Any] = field(default=_same)
    #: the old key's default: at this value it is dropped silently
    default: Any = None


def deprecated_key_line(old: str, new: str) -> str:
    return deprecation_line(f"config key {old}", new)


def _parent(data: dict, dotted: str, create: bool = False) -> dict | None:
    node = data
    for part in dotted.split(".")[:-1]:
        if create and not isinstance(node.get(part), dict):
            node[part] = {}
        node = node.get(part)
        if not isinstance(node, dict):
            return None
    return node


def upgrade(renamed: Iterable[Renamed], data: dict, warn: bool = True) -> dict:
    """``data`` (a config as nested dicts) with every old key moved to its new home."""
    data = copy.deepcopy(data)
    for r in renamed:
        parent = _parent(data, r.old)
        key = r.old.rsplit(".", 1)[-1]
        if parent is None or key not in parent:
            continue
        value = parent.pop(key)
        if value == r.default:
            continue
        if warn and int(os.environ.get("RANK", 0)) == 0:
            print(deprecated_key_line(r.old, r.new), file=sys.stderr)
        new_value = r.convert(value, data)
        if new_value is not UNCHANGED:
            _parent(data, r.new, create=True)[r.new.rsplit(".", 1)[-1]] = new_value
    return data


def with_old_overrides(renamed: Iterable[Renamed], data: dict, overrides: Iterable[str],
                       parse: Callable[[str], tuple[list[str], Any]]) -> tuple[dict, list[str]]:
    """``data`` with the overrides of old keys set, for :func:`upgrade` to move (``parse``: an
    override's dotted path and value), and the other overrides."""
    old = {r.old for r in renamed}
    data, rest = copy.deepcopy(data), []
    for text in overrides:
        if text.partition("=")[0].strip() not in old:
            rest.append(text)
            continue
        path, value = parse(text)
        _parent(data, ".".join(path), create=True)[path[-1]] = value
    return data, rest


def _sync_bn(on: bool, data: dict) -> Any:
    # BatchNorm becomes SyncBatchNorm; a frozen backbone has none to convert
    return "syncbn" if on and data.get("model", {}).get("norm") == "bn" else UNCHANGED


#: SyncBatchNorm is ``model.norm: syncbn`` (the task decides it: botnet.engine.parts.prepare_model)
SYNC_BN = Renamed("dist.sync_bn", "model.norm", convert=_sync_bn, default=False)

