"""Locating and verifying the model files that ship with deid-edit.

Models live in the repository's ``models/`` folder, installed into the package as
``deid_edit/_models`` (see setup.cfg), described in ``manifest.json`` (file, sha256, licence,
source, input). ``DEID_EDIT_MODELS`` overrides the folder. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelError

MANIFEST = "manifest.json"


def models_dir() -> Path:
    """The folder holding manifest.json: env override, installed package data, or the checkout."""
    env = os.environ.get("DEID_EDIT_MODELS")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here / "_models", here.parent / "models"]
    for c in candidates:
        if (c / MANIFEST).is_file():
            return c
    raise ModelError(
        f"model folder not found (looked in {', '.join(map(str, candidates))}); reinstall deid-edit "
        "or set DEID_EDIT_MODELS to the folder holding manifest.json"
    )


def manifest() -> dict[str, Any]:
    """The parsed manifest: {name: {file, sha256, licence, source, input, ...}}."""
    path = models_dir() / MANIFEST
    try:
        return json.loads(path.read_text())["models"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: unreadable model manifest ({exc}); reinstall deid-edit") from exc


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_path(name: str, verify: bool = True) -> Path:
    """Path of model ``name``, its checksum verified so a damaged file fails loudly, not oddly."""
    entries = manifest()
    if name not in entries:
        raise ModelError(f"model {name!r} is not in the manifest; known: {', '.join(sorted(entries))}")
    entry = entries[name]
    path = models_dir() / entry["file"]
    if not path.is_file():
        raise ModelError(f"{path}: model file missing; reinstall deid-edit")
    if verify and sha256_of(path) != entry["sha256"]:
        raise ModelError(f"{path}: checksum mismatch (damaged or replaced file); reinstall deid-edit")
    return path


def verify_all() -> list[tuple[str, Path, bool]]:
    """(name, path, ok) for every model in the manifest."""
    rows = []
    for name, entry in sorted(manifest().items()):
        path = models_dir() / entry["file"]
        ok = path.is_file() and sha256_of(path) == entry["sha256"]
        rows.append((name, path, ok))
    return rows
