"""Data passed between the stages of the engine.

decode produces ``Frame``; detect produces ``FrameDetections``; shots produce ``Shot``; track and
smooth produce ``Track``; identities produce ``Identity``; the plan holds all of them and hands the
renderer ``FaceRegion`` objects per frame. All are frozen dataclasses holding numpy arrays: only
detections travel between the two passes, never frames. Boxes are xyxy in source pixels of the
upright (rotation-applied) frame; time is an integer pts with a ``Fraction`` time base.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, overload

import numpy as np

Action = Literal["anonymize", "keep"]


@dataclass(frozen=True)
class VideoInfo:
    """What the analyze pass learned about the input; used to check a plan matches a video."""

    path: str
    width: int  # upright (display) width
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # counter-clockwise degrees, as PyAV's VideoFrame.rotation
    frame_count: int
    time_base: Fraction
    avg_rate: Fraction
    duration: Fraction  # seconds
    codec: str
    pix_fmt: str
    size_bytes: int
    fingerprint: str  # sha256 over the file size and its first and last MiB
    audio_streams: int = 0


@dataclass(frozen=True)
class Frame:
    """One decoded frame: RGB uint8, upright, with its exact timestamp."""

    index: int
    pts: int | None
    time_base: Fraction
    image: np.ndarray  # (H, W, 3) uint8 RGB
    full: np.ndarray | None = None  # full-resolution upright RGB, on small-face sweep frames only


def in_face_order(landmarks: np.ndarray) -> bool:
    """Whether 5 landmarks (left eye, right eye, nose, left and right mouth corner; upright image)
    lie in face order: eyes above the nose above the mouth. The detector keeps that layout on real
    faces, dim or turned; it scrambles it on things that are not faces (hands) and interpolation
    across a flip can break it. A direction read from scrambled points means nothing."""
    eyes, nose, mouth = (landmarks[0, 1] + landmarks[1, 1]) / 2, landmarks[2, 1], (landmarks[3, 1] + landmarks[4, 1]) / 2
    return bool(eyes < nose < mouth)


@dataclass(frozen=True)
class FrameDetections:
    """Faces found in one analyzed frame; an empty one means 'analyzed, no face'."""

    frame_index: int
    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray | None = None  # (N, 5, 2) float32

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(frame_index: int) -> FrameDetections:
        """An analyzed frame without faces."""
        return FrameDetections(
            frame_index,
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32),
        )


class DetectionLog(Sequence[FrameDetections]):
    """Every analyzed frame's detections, in a few flat arrays; reads give ``FrameDetections``.

    Why: a list of ``FrameDetections`` costs about 0.7 KB a frame (three array headers and the
    object) and a run keeps every frame's for its plan; a 10-minute clip or a day of live video
    grows by that much per frame. Here a frame costs 17 bytes plus 60 per face. Reads return copies,
    so nothing holds on to a buffer the log has outgrown. Boxes, scores and landmarks are stored as
    float32, the detector's type (a float64 input would be rounded)."""

    def __init__(self, items: Iterable[FrameDetections] = ()) -> None:
        self._n = self._m = 0  # frames, faces
        self._index = np.zeros(64, np.int64)  # frame_index of each entry
        self._first = np.zeros(65, np.int64)  # entry i holds faces _first[i]:_first[i+1]
        self._has_lm = np.zeros(64, bool)  # landmarks given (None otherwise)
        self._boxes = np.zeros((64, 4), np.float32)
        self._scores = np.zeros(64, np.float32)
        self._landmarks = np.zeros((64, 5, 2), np.float32)
        self.extend(items)

    @staticmethod
    def _room(a: np.ndarray, need: int) -> np.ndarray:
        if need <= len(a):
            return a
        out = np.zeros((max(need, 2 * len(a)), *a.shape[1:]), a.dtype)
        out[: len(a)] = a
        return out

    def append(self, det: FrameDetections) -> None:
        n, m, k = self._n, self._m, len(det)
        self._index, self._has_lm = self._room(self._index, n + 1), self._room(self._has_lm, n + 1)
        self._first = self._room(self._first, n + 2)
        self._boxes, self._scores = self._room(self._boxes, m + k), self._room(self._scores, m + k)
        self._landmarks = self._room(self._landmarks, m + k)
        self._index[n], self._has_lm[n] = det.frame_index, det.landmarks is not None
        self._boxes[m : m + k], self._scores[m : m + k] = det.boxes, det.scores
        if det.landmarks is not None:
            self._landmarks[m : m + k] = det.landmarks
        self._first[n + 1] = m + k
        self._n, self._m = n + 1, m + k

    def extend(self, dets: Iterable[FrameDetections]) -> None:
        for d in dets:
            self.append(d)

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> FrameDetections: ...
    @overload
    def __getitem__(self, i: slice) -> list[FrameDetections]: ...
    def __getitem__(self, i: int | slice) -> FrameDetections | list[FrameDetections]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"detection log index {i} out of range ({self._n} frames)")
        a, b = int(self._first[i]), int(self._first[i + 1])
        lm = self._landmarks[a:b].copy() if self._has_lm[i] else None
        return FrameDetections(int(self._index[i]), self._boxes[a:b].copy(), self._scores[a:b].copy(), lm)

    def __iter__(self) -> Iterator[FrameDetections]:
        return (self[i] for i in range(self._n))

    @property
    def nbytes(self) -> int:
        """Bytes held (with the room for growth)."""
        arrays = (self._index, self._first, self._has_lm, self._boxes, self._scores, self._landmarks)
        return sum(a.nbytes for a in arrays)


@dataclass(frozen=True)
class Shot:
    """A half-open frame range [start, end) between two cuts."""

    index: int
    start: int
    end: int

    def __contains__(self, frame_index: object) -> bool:
        return isinstance(frame_index, int) and self.start <= frame_index < self.end


@dataclass(frozen=True)
class Track:
    """One face followed through consecutive frames of one shot.

    ``observed[i]`` is False for samples that were interpolated or extended rather than detected;
    ``margin[i]`` is the extra relative padding the renderer adds there (fail closed).
    """

    track_id: int
    shot_index: int
    frames: np.ndarray  # (T,) int64, strictly increasing and contiguous
    boxes: np.ndarray  # (T, 4) float32
    scores: np.ndarray  # (T,) float32
    landmarks: np.ndarray | None  # (T, 5, 2) float32
    observed: np.ndarray  # (T,) bool
    margin: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))  # (T,)
    embedding: np.ndarray | None = None  # (128,) mean face descriptor of the best samples, if any
    embed_samples: int = 0  # how many samples the embedding averages (0: not identifiable)

    @property
    def start(self) -> int:
        return int(self.frames[0])

    @property
    def end(self) -> int:
        """One past the last frame."""
        return int(self.frames[-1]) + 1


@dataclass(frozen=True)
class Identity:
    """A person: one or more tracks, and whether they are anonymized."""

    identity_id: int
    track_ids: tuple[int, ...]
    action: Action = "anonymize"
    label: str = ""
    thumbnail: str | None = None


@dataclass(frozen=True)
class FaceRegion:
    """What a renderer receives for one face in one frame."""

    identity_id: int
    track_id: int
    box: np.ndarray  # (4,) float32 xyxy, upright source pixels
    landmarks: np.ndarray | None
    observed: bool
    score: float = 1.0
    margin: float = 0.0  # extra relative padding for uncertain samples
    weak: bool = False  # its track was never detected above --threshold: a dim face, or no face at all
