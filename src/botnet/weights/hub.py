"""Fetching weights through the libraries' own download and cache code, offline-safe.

torchvision's weights API and ``torch.hub`` keep files in the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file>``); timm downloads through huggingface_hub into the
Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``). Both caches are read at call time.

A cached file is read with no network call (safetensors, or ``torch.load(weights_only=True)``).
Otherwise one bounded connection attempt to the host (or the HTTPS proxy) comes first, so a
machine without network fails at once instead of through a client's retries; then the library
downloads (torchvision's with a socket timeout of ``BOTNET_DOWNLOAD_TIMEOUT`` seconds, default 30;
huggingface_hub's with its own). ``BOTNET_OFFLINE=1`` (for the Hugging Face cache also
``HF_HUB_OFFLINE=1``) skips the network entirely. A failure is a :class:`UserError` naming the
source, the cache path and the file to place there.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import torch

from botnet.errors import UserError
from botnet.weights.files import load_state_dict

OFFLINE_ENV = "BOTNET_OFFLINE"
TIMEOUT_ENV = "BOTNET_DOWNLOAD_TIMEOUT"
#: what timm looks for in a Hugging Face repository, in its order of preference
HF_FILES = ("model.safetensors", "pytorch_model.bin")


def truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV) or "30"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # NaN fails this too
        raise UserError(f"{TIMEOUT_ENV}={text!r}: must be a number of seconds above 0 and at most 3600")
    return value


@contextlib.contextmanager
def _socket_timeout() -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_timeout())
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _unreachable(url: str) -> str | None:
    """Why ``url``'s host (or the HTTPS proxy) cannot be reached, or None: one bounded connection
    attempt, so that a machine without network fails at once instead of through a client's retries."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    try:
        target = urlparse(proxy if proxy else url)
        host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    except ValueError as e:
        raise UserError(f"HTTPS_PROXY={proxy!r}: not a usable proxy address ({e})" if proxy
                        else f"{url}: not a usable address ({e})") from None
    try:
        socket.create_connection((host, port), timeout=min(_timeout(), 10)).close()
    except OSError as e:
        return f"{host}:{port} unreachable: {e}"
    return None


def _not_cached(text: str, file: Path, url: str, reason: str, cache_note: str) -> UserError:
    return UserError(f"{text}: not in the cache and not downloaded ({reason}).\n  cache: {cache_note}\n"
                     f"  to use it offline, place {file.name} (from {url}) at {file}\n"
                     "  or pass a local copy of the file as the weights (it is converted on the fly)")


def _corrupt(text: str, file: Path, error: Exception, url: str) -> UserError:
    first = (str(error).strip().splitlines() or [""])[0][:160]
    return UserError(f"{text}: the cached file {file} is unreadable ({type(error).__name__}: {first}); delete it "
                     f"to download it again, or replace it with an intact copy of {url}")


# -- torch hub cache (torchvision, timm's URL-only weights) ----------------------------------------


def torch_hub_file(url: str) -> Path:
    """Where the torch hub cache keeps (or will keep) the file at ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def from_torch_hub(text: str, url: str, load: Callable[[], dict]) -> tuple[dict, Path]:
    """``load()`` (the library's own fetch-and-read) with the cache checked first and failures named."""
    file = torch_hub_file(url)
    note = f"{file.parent} (the torch hub cache: $TORCH_HOME/hub/checkpoints)"
    if not file.is_file():
        reason = f"{OFFLINE_ENV} is set" if truthy(OFFLINE_ENV) else _unreachable(url)
        if reason:
            raise _not_cached(text, file, url, reason, note)
    try:
        with _socket_timeout():
            state = load()
    except Exception as e:  # noqa: BLE001 - a failed download, or an unreadable cached file
        if not file.is_file():
            raise _not_cached(text, file, url, f"download failed: {type(e).__name__}: {e}", note) from None
        raise _corrupt(text, file, e, url) from None
    return dict(state), file


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment says now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def hf_cached_file(hub_id: str) -> Path | None:
    """The cached weights file of a Hugging Face repository (``repo@revision``), or None."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for filename in HF_FILES:
        path = try_to_load_from_cache(repo, filename, cache_dir=str(hf_cache_dir()), revision=revision or None)
        if isinstance(path, str):
            return Path(path)
    return None


def hf_cache_place(hub_id: str) -> Path:
    """Where a weights file of a Hugging Face repository goes in the cache."""
    repo, _, revision = hub_id.partition("@")
    return hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / (revision or "main") / HF_FILES[0]


def from_hf_cache(text: str, hub_id: str) -> tuple[dict, Path]:
    repo = hub_id.partition("@")[0]
    cache = hf_cache_dir()
    file = hf_cached_file(hub_id)
    url = f"https://huggingface.co/{repo}"
    place = hf_cache_place(hub_id)
    note = f"{cache} (the Hugging Face cache: $HF_HUB_CACHE, else $HF_HOME/hub)"
    if file is None:
        offline = [f"{v} is set" for v in (OFFLINE_ENV, "HF_HUB_OFFLINE") if truthy(v)]
        reason = offline[0] if offline else _unreachable(os.environ.get("HF_ENDPOINT") or url)
        if reason:
            raise _not_cached(text, place, url, reason, note)
        try:
            from timm.models import load_state_dict_from_hf

            load_state_dict_from_hf(hub_id, weights_only=True, cache_dir=str(cache))  # timm's download
        except Exception as e:  # noqa: BLE001 - whatever the hub client raises offline
            if hf_cached_file(hub_id) is None:
                raise _not_cached(text, place, url, f"download failed: {type(e).__name__}: {e}", note) from None
        file = hf_cached_file(hub_id)
    try:
        return load_state_dict(file), file
    except UserError as e:
        raise _corrupt(text, file, e, url) from None
