"""Training data for the cloak: photos and videos in, a folder of aligned face chips out (next:
``train`` reads it).

``extract_faces`` finds faces with the engine's own detector and cuts them with its own alignment
(``embed.align_faces``, 150x150), so the generator learns on exactly the chips the renderer hands it.
It writes ``DIR/chips/*.png``, ``DIR/index.jsonl`` (per chip: source, frame, identity, score, box,
landmarks) and ``DIR/held_out.json``. Held out, so evaluations are honest: a seeded
``HOLDOUT_PERCENT`` of LFW people with 2+ photos (by name hash, the same on every machine) and
everyone in the ``holdout_people`` folders, also dropped by descriptor from every other source.
No torch here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
HOLDOUT_SEED = "deid-edit-cloak-holdout-v1"
HOLDOUT_PERCENT = 10
INDEX = "index.jsonl"
HELD_OUT = "held_out.json"
CHIPS = "chips"


def lfw_identity(path: Path) -> str | None:
    """The LFW person of ``NAME/NAME_0001.jpg`` (the folder name), or None for other layouts."""
    name = path.parent.name
    return name if name and path.stem.startswith(name + "_") else None


def lfw_held_out(name: str, photo_count: int) -> bool:
    """Whether LFW person ``name`` (with ``photo_count`` photos) is held out of training.

    A hash of the name, not a draw over the folder listing: the decision for one person never
    changes with which other people are present.
    """
    if photo_count < 2:
        return False
    digest = hashlib.sha256(f"{HOLDOUT_SEED}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HOLDOUT_PERCENT


@dataclass
class ExtractReport:
    """What ``extract_faces`` did: counts per outcome and the held-out people met."""

    chips: int = 0
    sources: int = 0
    no_face: int = 0  # files in which the detector found no face at all
    too_small: int = 0
    held_out_lfw: set[str] = field(default_factory=set)
    held_out_files: int = 0
    held_out_matches: int = 0
    unreadable: list[str] = field(default_factory=list)


def _walk(paths: Sequence[Path]) -> Iterator[Path]:
    """Image and video files under ``paths`` (files given directly are kept), sorted."""
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    fp = Path(root) / f
                    if fp.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
                        yield fp
        elif p.is_file():
            yield p
        else:
            raise InputError(f"{p}: no such file or folder; give photos, videos or folders of them")


def _read_image(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _frames(path: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB) of a photo (index 0) or of every ``every``-th frame of a video."""
    if path.suffix.lower() in VIDEO_EXTS:
        from ..io.decode import VideoReader

        for frame in VideoReader(path).frames():
            if frame.index % every == 0:
                yield frame.index, frame.image
        return
    img = _read_image(path)
    if img is not None:
        yield 0, img


class _Faces:
    """Detector + alignment (+ embedder for the held-out check), built once."""

    def __init__(self, threshold: float, device: str) -> None:
        from ..config import DetectConfig
        from ..detect import create_detector

        self.cfg = DetectConfig(device=device)
        self.detector = create_detector(self.cfg)
        self.threshold = threshold
        self._embedder: Any = None

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from ..embed import FaceEmbedder

            self._embedder = FaceEmbedder(device=self.cfg.device)
        return self._embedder

    def find(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes, scores, landmarks) in source pixels, detected at the engine's usual scale."""
        h, w = rgb.shape[:2]
        scale = self.cfg.detection_scale(w, h)
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        (det,) = self.detector.detect([small], [0], scale, self.threshold)
        if not len(det) or det.landmarks is None:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        return det.boxes, det.scores, det.landmarks


def held_out_descriptors(folders: Sequence[Path], faces: _Faces) -> np.ndarray:
    """(N,128) descriptors of every face in every photo under ``folders`` (group photos: all faces)."""
    from ..embed import align_faces

    out = []
    for path in _walk(folders):
        for _, rgb in _frames(path, every=10):
            _, _, lms = faces.find(rgb)
            if len(lms):
                out.append(faces.embedder.embed(align_faces(rgb, lms)))
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def extract_faces(
    sources: Sequence[Path],
    out_dir: Path,
    holdout_people: Sequence[Path] = (),
    every: int = 10,
    min_face: int = 64,
    threshold: float = 0.5,
    device: str = "auto",
    force: bool = False,
) -> ExtractReport:
    """Detect, align and save every usable face of ``sources`` into ``out_dir`` (see the module doc).

    ``min_face`` is the smallest face box side (source pixels) kept: smaller faces would be
    upscaled into blurry chips and teach the generator blur. ``every`` samples video frames
    (consecutive frames are near duplicates). Writes to a temporary folder and renames it on
    success, so an interrupted run leaves no half dataset behind.
    """
    from ..embed import SAME_PERSON_L2, align_faces, chip_transform, distance

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise InputError(f"{out_dir}: already exists and is not empty; use --force to replace it or choose another folder")
    holdout_dirs = [Path(p).resolve() for p in holdout_people]
    for p in holdout_dirs:
        if not p.exists():
            raise InputError(f"{p}: held-out people folder not found")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / CHIPS).mkdir(parents=True)
    faces = _Faces(threshold, device)
    held_desc = held_out_descriptors(holdout_dirs, faces) if holdout_dirs else np.zeros((0, 128), np.float32)
    report = ExtractReport()
    photo_counts: dict[Path, int] = {}
    with open(tmp / INDEX, "w") as index:
        for path in _walk([Path(s) for s in sources]):
            resolved = path.resolve()
            if any(resolved.is_relative_to(d) for d in holdout_dirs):
                report.held_out_files += 1
                continue
            identity = lfw_identity(path)
            if identity is not None:
                if path.parent not in photo_counts:
                    photo_counts[path.parent] = sum(1 for f in path.parent.iterdir() if f.suffix.lower() in IMAGE_EXTS)
                if lfw_held_out(identity, photo_counts[path.parent]):
                    report.held_out_lfw.add(identity)
                    continue
            report.sources += 1
            found = False
            try:
                for frame_index, rgb in _frames(path, every):
                    boxes, scores, lms = faces.find(rgb)
                    found = found or len(boxes) > 0
                    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                    keep = side >= min_face
                    report.too_small += int((~keep).sum())
                    if not keep.any():
                        continue
                    boxes, scores, lms = boxes[keep], scores[keep], lms[keep]
                    chips = align_faces(rgb, lms)
                    drop = np.zeros(len(chips), bool)
                    if len(held_desc):
                        desc = faces.embedder.embed(chips)
                        drop = distance(desc[:, None], held_desc[None]).min(axis=1) < SAME_PERSON_L2
                        report.held_out_matches += int(drop.sum())
                    for chip, box, score, lm, dropped in zip(chips, boxes, scores, lms, drop):
                        if dropped:
                            continue
                        m = chip_transform(lm)
                        chip_lm = lm @ m[:, :2].T + m[:, 2]
                        name = f"{report.chips:06d}.png"
                        cv2.imwrite(str(tmp / CHIPS / name), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
                        entry = {
                            "chip": f"{CHIPS}/{name}",
                            "source": str(path),
                            "frame": frame_index,
                            "identity": identity,
                            "score": round(float(score), 4),
                            "box": [round(float(v), 2) for v in box],
                            "landmarks": np.round(chip_lm, 2).tolist(),
                        }
                        index.write(json.dumps(entry) + "\n")
                        report.chips += 1
            except Exception as exc:  # a damaged file must not end a long extraction
                from ..errors import DeidError

                if not isinstance(exc, DeidError | OSError):
                    raise
                log.warning("%s: skipped (%s)", path, exc)
                report.unreadable.append(str(path))
            if not found:
                report.no_face += 1
    held = {
        "rule": f"LFW people with >= 2 photos whose sha256('{HOLDOUT_SEED}:NAME') % 100 < {HOLDOUT_PERCENT}; "
        f"faces within {SAME_PERSON_L2} (descriptor L2) of anyone in the held-out people folders",
        "lfw_people": sorted(report.held_out_lfw),
        "people_folders": [str(p) for p in holdout_dirs],
        "people_faces": int(len(held_desc)),
        "held_out_files": report.held_out_files,
        "dropped_matches": report.held_out_matches,
    }
    (tmp / HELD_OUT).write_text(json.dumps(held, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return report


def read_index(data_dir: Path) -> list[dict[str, Any]]:
    """The chips of a dataset folder, excluding held-out identities (a second line of defence)."""
    data_dir = Path(data_dir)
    path = data_dir / INDEX
    if not path.is_file():
        raise InputError(f"{data_dir}: no {INDEX}; make the dataset with 'deid-edit extract-faces SRC... -o {data_dir}'")
    held = read_held_out(data_dir)
    names = set(held.get("lfw_people", []))
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e.get("identity") not in names or e.get("identity") is None]


def read_held_out(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / HELD_OUT
    return json.loads(path.read_text()) if path.is_file() else {}
