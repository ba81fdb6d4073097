"""Where a run came from: software versions, the device, and the identity of the weights and the data.

``collect(config, name_or_path)`` gives one flat-ish dict that the runner stores as ``record["provenance"]``
(it is not part of the config, so it never enters the config hash). ``analysis.load_results`` shows
each entry as a column ``provenance.<key>`` (``provenance.data_sha256.train`` for the nested ones).

Weights and data files are identified by their sha256; hashing 90 MB of weights on every run would
cost seconds, so each file's digest is cached by (path, size, mtime) in
``~/.cache/lora-arena/sha256.json`` (or ``$LORA_ARENA_CACHE``). From the hub, the commit that the
local Hugging Face cache resolved is recorded instead (``*_revision``); no network is used.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path

#: packages whose versions decide what a run computes (None when not installed)
PACKAGES = ("torch", "transformers", "accelerate", "datasets", "peft", "bitsandbytes")
#: files that hold a model's weights
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")


def collect(config, name_or_path: str) -> dict:
    """Provenance of one run of ``config`` (a built RunConfig) on the model at ``name_or_path``.
    A file that cannot be read leaves its digest out (``provenance_error`` says why); the run goes on."""
    found = {"python": platform.python_version(), **package_versions(), "platform": platform.platform(),
             **device_info(config.train.device)}
    try:
        found.update(model_identity(name_or_path))
        found.update(data_identity(config.task_spec, config.data.glue_dir))
    except OSError as error:
        found["provenance_error"] = f"{type(error).__name__}: {error}"
    return found


def package_versions() -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device_setting: str | None = None) -> dict:
    """The device the training loop uses (accelerate picks CUDA when there is one, unless told cpu)."""
    import torch

    info = {"device": "cpu", "cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "gpu": None,
            "gpu_memory_gb": None, "cuda": None}
    if device_setting != "cpu" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(device="cuda", gpu=properties.name, gpu_memory_gb=round(properties.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, gpu_count=torch.cuda.device_count())
    return info


# ------------------------------------------------------------------------------------------ file hashes
def cache_file() -> Path:
    from .models import cache_root

    return cache_root() / "sha256.json"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by (absolute path, size, mtime) so an unchanged file is read once."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _read_cache()
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    _write_cache(cache)
    return cache[key]


def _read_cache() -> dict:
    try:
        cache = json.loads(cache_file().read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    """Atomic: parallel runs may each lose the other's new entry, never corrupt the file."""
    target = cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".sha256.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(cache, handle, indent=0, sort_keys=True)
        os.replace(tmp, target)
    except OSError:
        pass  # a read-only cache only costs the re-hashing


def hub_revision(repo_id: str, kind: str = "models", revision: str | None = None) -> str | None:
    """The commit the local Hugging Face cache resolved for ``repo_id`` (None when it is not cached)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    ref = revision or "main"
    if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref):
        return ref  # already a commit
    refs = Path(HF_HUB_CACHE) / f"{kind}--{repo_id.replace('/', '--')}" / "refs" / ref
    try:
        return refs.read_text().strip() or None
    except OSError:
        return None


# ----------------------------------------------------------------------------------------- identities
def model_identity(name_or_path: str, revision: str | None = None) -> dict:
    """A local folder (the packaged models): sha256 over its weight files; a hub id: its revision."""
    folder = Path(name_or_path)
    if folder.is_dir():
        files = sorted({f for pattern in WEIGHT_PATTERNS for f in folder.glob(pattern)})
        combined = hashlib.sha256()
        for file in files:
            combined.update(f"{file.name}\0{file_sha256(file)}\n".encode())
        return {"model_revision": None, "model_sha256": combined.hexdigest() if files else None}
    return {"model_revision": hub_revision(name_or_path, "models", revision),
            "model_sha256": None}


def data_files(task, glue_dir) -> dict[str, Path]:
    """The local file each split of ``task`` (a Task) is read from ({} when it comes from the hub, or
    when its files cannot be named: provenance never stops a run)."""
    if not task.uses_local_files(glue_dir):
        return {}
    if task.generate:
        from .demo_task import default_folder

        base = default_folder()
    else:
        base = Path(os.path.expanduser(str(glue_dir))) if glue_dir is not None else None
    try:
        return task.local_files(base)
    except (ValueError, OSError, KeyError):
        return {}


def data_identity(task, glue_dir) -> dict:
    files = {split: path for split, path in data_files(task, glue_dir).items() if path.is_file()}
    if files:
        return {"data_revision": None, "data_sha256": {split: file_sha256(path) for split, path in files.items()},
                "data_files": {split: str(path) for split, path in files.items()}}
    hub = task.hub or {}
    revision = hub_revision(hub["path"], "datasets", hub.get("revision")) if hub.get("path") else None
    return {"data_revision": revision, "data_sha256": None, "data_files": None}
