"""Files and numbers the converters share: dlib's model files, checksums, cosine, face samples.

Input: the installed ``face_recognition_models`` package and folders of face photos. Output: paths,
sha256 digests, row-wise cosine similarities and reproducible photo samples for
``convert.dlib_resnet``, ``convert.chip_template`` and ``convert.quantize``. Why: one definition of
"the audited file" and "the verification sample" for every converter.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np


def package_file(name: str) -> Path:
    """A model file shipped in the ``face_recognition_models`` package.

    Located with ``find_spec`` instead of importing the package, whose ``__init__`` needs
    ``pkg_resources`` (gone from recent setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face_recognition_models is not installed (pip install 'deid-edit[convert]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from face_recognition_models")
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def sample_images(faces_dir: Path, count: int, exclude: Path | None = None, seed: int = 0) -> list[Path]:
    """``count`` *.jpg photos drawn at random (fixed seed) from a folder tree.

    ``exclude`` is an LFW ``pairs.txt``: its images are left out, so a template fitted here is not
    fitted on the faces that ``benchmarks/lfw.py`` scores it on.
    """
    skip: set[str] = set()
    if exclude is not None:
        for line in Path(exclude).read_text().split("\n")[1:]:
            f = line.split("\t")
            if len(f) == 3:
                skip |= {f"{f[0]}_{int(f[1]):04d}", f"{f[0]}_{int(f[2]):04d}"}
            elif len(f) == 4:
                skip |= {f"{f[0]}_{int(f[1]):04d}", f"{f[2]}_{int(f[3]):04d}"}
    paths = sorted(p for p in Path(faces_dir).rglob("*.jpg") if p.stem not in skip)
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=min(count, len(paths)), replace=False))]
