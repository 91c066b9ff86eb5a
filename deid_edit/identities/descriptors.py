"""Face descriptors sampled during analyze: which detections are worth embedding, and how well.

Input: each frame's detections (boxes, scores, landmarks) and the decoded frames the detector already
holds. Output: per track, the mean descriptor of its best samples (large, confident, frontal, with
enough contrast) or none. Next: ``identities.link`` links tracks by these descriptors. Why sample:
embedding every face of every frame would cost more than detection; a few good samples per track
identify it as well, and weak ones (profiles, dark chips) would only mislead the linking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import IdentityConfig
from ..types import FrameDetections


def frontality(landmarks: np.ndarray | None, count: int) -> np.ndarray:
    """Per sample, 1 for a frontal face down to 0 for a profile, from 5-point landmarks.

    A turned head moves the nose towards one eye (in image x); a face that is upside down or whose
    landmarks are nonsense (nose not between eyes and mouth in y) counts half. Without landmarks
    every sample gets a neutral 0.5, so size and score decide.
    """
    if landmarks is None or len(landmarks) != count:
        return np.full(count, 0.5)
    lm = np.asarray(landmarks, np.float64)
    le, re, nose = lm[:, 0], lm[:, 1], lm[:, 2]
    dx = re[:, 0] - le[:, 0]
    ok = dx > 1e-3
    t = np.where(ok, (nose[:, 0] - le[:, 0]) / np.where(ok, dx, 1.0), 0.0)
    f = np.where(ok, np.clip(1.0 - 2.0 * np.abs(t - 0.5), 0.0, 1.0), 0.0)
    eye_y = (le[:, 1] + re[:, 1]) / 2
    mouth_y = (lm[:, 3, 1] + lm[:, 4, 1]) / 2
    upright = (eye_y < nose[:, 1]) & (nose[:, 1] < mouth_y)
    return np.where(upright, f, 0.5 * f)


# The eyes-to-mouth area of a 150x150 chip (embed.CHIP_TEMPLATE: eyes at y 46, mouth at y 105).
_CONTRAST_AREA = (slice(35, 125), slice(35, 115))


def chip_contrast(chip: np.ndarray) -> float:
    """Grey-level standard deviation (0..255 scale) of a chip's eyes-to-mouth area.

    Why: a face in deep shadow or a dim, defocused crowd gives an almost uniform chip, and the
    recognizer maps all such chips close to each other (two black faces measure ~0.1 apart, a
    "same person" by far). Those descriptors say "dark", not "who". On LFW photos the 1st
    percentile is ~22; the dim audience of hamilton_stage.mp4 is 1-9.
    """
    grey = chip[_CONTRAST_AREA].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(grey.std())


def quality(box: np.ndarray, score: float, landmarks: np.ndarray | None) -> float:
    """How useful a face sample is for recognition: size x confidence x frontality."""
    size = float(min(box[2] - box[0], box[3] - box[1]))
    frontal = 1.0 if landmarks is None else float(frontality(landmarks[None], 1)[0])
    return size * score * (0.3 + 0.7 * frontal)


class DescriptorSampler:
    """Embeds sampled detections during the analyze pass; keyed by (frame, detection index)."""

    def __init__(self, cfg: IdentityConfig, embedder: object | None = None) -> None:
        from ..embed import FaceEmbedder, align_faces

        self.cfg = cfg
        self.embedder = embedder or FaceEmbedder(recognizer=cfg.recognizer)
        self._align = align_faces
        self._chips: list[np.ndarray] = []
        self._keys: list[tuple[int, int]] = []
        self.samples: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
        self._quality: dict[tuple[int, int], float] = {}

    def add(self, image: np.ndarray, det: FrameDetections, scale: float, threshold: float) -> None:
        """Queue the faces of one analyzed frame (``image`` is the detector's scaled frame)."""
        if det.frame_index % self.cfg.every or det.landmarks is None or not len(det):
            return
        for i in range(len(det)):
            box = det.boxes[i]
            if det.scores[i] < threshold or min(box[2] - box[0], box[3] - box[1]) < self.cfg.min_identity_face:
                continue
            if frontality(det.landmarks[i : i + 1], 1)[0] < self.cfg.min_frontality:
                continue  # beyond a three-quarter view descriptors drift towards everyone (hamilton: 0.47-0.57 to strangers)
            chip = self._align(image, det.landmarks[i : i + 1] * scale)[0]
            if chip_contrast(chip) < self.cfg.min_contrast:
                continue  # too dark or flat to say who it is: never linked, never kept
            key = (det.frame_index, i)
            self._chips.append(chip)
            self._keys.append(key)
            self._quality[key] = quality(box, float(det.scores[i]), det.landmarks[i])
        if len(self._chips) >= 32:
            self.flush()

    def flush(self) -> None:
        if self._chips:
            vecs = self.embedder.embed(np.stack(self._chips))  # type: ignore[attr-defined]
            for key, v in zip(self._keys, vecs):
                self.samples[key] = (v.astype(np.float32), self._quality[key])
            self._chips.clear()
            self._keys.clear()

    def forget_before(self, frame: int) -> None:
        """Drop the descriptors of frames before ``frame``: a streaming run whose shot ended has put
        them into its tracks' embeddings, and keeping one per sampled face grows with the video."""
        self.flush()
        self.samples = {k: v for k, v in self.samples.items() if k[0] >= frame}
        self._quality = {k: v for k, v in self._quality.items() if k[0] >= frame}

    def prune(self, before: int, tracks: Sequence[tuple[Sequence[int], Sequence[int]]]) -> None:
        """Drop the samples of frames before ``before`` that can no longer change an embedding:
        those of no track, and beyond each track's ``max_samples`` best (``tracks``: each open
        track's observation frames and detection indices). Why: a shot stays open for as long as
        it lasts, an hour of one take, and a sample every few frames grows with it; the best
        ones are kept with the tie rule ``track_embedding`` uses (earlier frame first), so every
        embedding stays the same."""
        self.flush()
        keep: set[tuple[int, int]] = set()
        for frames, det_indices in tracks:
            keys = ((int(f), int(i)) for f, i in zip(frames, det_indices) if f < before)
            old = [k for k in keys if k in self.samples]
            old.sort(key=lambda k: -self.samples[k][1])  # stable: frame order among equals
            keep.update(old[: self.cfg.max_samples])
        self.samples = {k: v for k, v in self.samples.items() if k[0] >= before or k in keep}
        self._quality = {k: v for k, v in self._quality.items() if k[0] >= before or k in keep}

    def track_embedding(self, frames: Sequence[int], det_indices: Sequence[int]) -> tuple[np.ndarray | None, int]:
        """Mean descriptor of a track's best samples, and how many were averaged."""
        self.flush()
        got = [self.samples[(f, i)] for f, i in zip(frames, det_indices) if (f, i) in self.samples]
        if len(got) < self.cfg.min_samples:
            return None, 0
        got.sort(key=lambda s: -s[1])
        best = np.stack([v for v, _ in got[: self.cfg.max_samples]])
        return best.mean(axis=0).astype(np.float32), len(best)
