"""analyze: a video in, a Plan out (faces, shots, tracks, identities).

Decodes once and feeds every frame to the face detector (batched, at a resolution chosen from
``--min-face``; busy scenes also swept at full resolution, quiet ones detected coarser) and to the
shot detector; tracking, gap filling, smoothing and identities then work on detections only.
Next stage: ``pipeline.render`` (or a saved plan file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

import cv2
import numpy as np

from .._version import __version__
from ..config import AnalyzeConfig, DetectConfig
from ..detect import FaceDetector, create_detector, detect_tiled
from ..errors import InputError
from ..geometry import nms
from ..identities import (
    DescriptorSampler,
    build_identities,
    identities_from_tracks,
)
from ..io.decode import VideoReader, probe
from ..io.metadata import removed_by_default
from ..plan import Plan
from ..progress import NullProgress, ProgressSink
from ..shots import ShotDetector, load_cut_list
from ..smooth import Scene, complete_tracks
from ..track import RawTrack, track_video
from ..types import DetectionLog, Frame, FrameDetections, Identity, Shot, Track, VideoInfo

log = logging.getLogger(__name__)


WEAK_MIN_FACE = 0.5  # weak tracks start from low-score boxes at least this x --min-face (hamilton's dim faces: 25-60 px)
BUSY_FACES = 3  # a frame with this many faces, or with a face under 2x --min-face, is a busy scene
BUSY_HOLD = 2  # seconds a busy scene keeps the full-resolution sweep on
QUIET_FACE = 4  # a quiet scene's faces are all at least this x --min-face (and fewer than BUSY_FACES)
CLOSE_UP_FACE = 8  # ... and a close-up's at least this x --min-face: its coarse frames are detected at a quarter
SWEEP_OVERLAP = 2.5  # x --min-face: how far the full-resolution sweep's tiles overlap
COARSE_EVERY_CPU = 5  # DetectConfig.coarse_every when automatic, on the CPU (TrackConfig.extend covers 4 frames before)


def crowded(det: FrameDetections, threshold: float, small_side: float) -> bool:
    """Whether a frame's confident faces number ``BUSY_FACES`` or more, or any is under ``small_side``
    pixels (short side): what turns the small-face sweep on and keeps the half-scale pass off."""
    sure = det.scores >= threshold
    sides = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])[sure]
    return bool(sure.sum() >= BUSY_FACES or (sides < small_side).any())


class SmallFaceSweep:
    """Full-resolution detection every few frames while the scene is busy (several or small faces).

    Detecting at a reduced scale is what keeps a talking head fast, but it misses the distant faces
    of a crowd. Where the reduced-scale pass sees a crowd or small faces, every ``sweep_every``-th
    frame is also searched at full resolution; faces found only there become tracks whose missing
    frames are filled and extended like any other (so late discovery still covers earlier frames).
    """

    def __init__(self, detector: FaceDetector, cfg: DetectConfig, low: float, rate: Fraction) -> None:
        self.detector, self.cfg, self.low = detector, cfg, low
        self.hold = max(1, int(round(float(rate) * BUSY_HOLD)))
        self.busy_until = -1
        self.frames = 0  # frames swept, for the record
        self.pending: tuple[int, FrameDetections] | None = None
        # tiles overlap by more than the faces the sweep is for (under 2x --min-face), so each of
        # them is whole in some tile; larger ones are the normal-scale pass's
        self.overlap = max(64, -(-int(SWEEP_OVERLAP * cfg.min_face) // 32) * 32)

    def run(self, frame: Frame, detections: Sequence[FrameDetections]) -> None:
        """Update the busy state from recent detections; sweep ``frame`` if busy (merged by ``merge``)."""
        for det in detections[-self.cfg.sweep_every :]:
            if crowded(det, self.cfg.threshold, 2 * self.cfg.min_face):
                self.busy_until = det.frame_index + self.hold
        if frame.full is None or frame.index > self.busy_until:
            return
        self.frames += 1
        self.pending = (frame.index, detect_tiled(self.detector, frame.full, frame.index, self.low, self.overlap))

    def merge(self, det: FrameDetections) -> FrameDetections:
        """``det`` with the sweep's faces of the same frame added (duplicates suppressed)."""
        pending = self.pending
        if pending is None or pending[0] != det.frame_index or not len(pending[1]):
            return det
        self.pending = None
        extra = pending[1]
        boxes = np.concatenate([det.boxes, extra.boxes])
        scores = np.concatenate([det.scores, extra.scores])
        keep = nms(boxes, scores, 0.3)
        lms = None
        if det.landmarks is not None and extra.landmarks is not None:
            lms = np.concatenate([det.landmarks, extra.landmarks])[keep]
        return FrameDetections(det.frame_index, boxes[keep], scores[keep], lms)


class CoarsePass:
    """Half-scale detection on most frames of a quiet scene: no face, or a few large ones.

    Detection is most of the analysis time, and a talking head does not need the resolution that a
    crowd does: a face of ``QUIET_FACE`` x ``--min-face`` is still twice the detector's reliable
    size at half the scale (a quarter of the cost). Every ``coarse_every``-th frame stays at the
    normal scale, so a small face that walks in is found within that many frames; its track is
    then extended backwards over the frames before (``TrackConfig.extend`` >= ``coarse_every`` - 1),
    and the scene stops being quiet. A close-up (every face ``CLOSE_UP_FACE`` x ``--min-face`` or
    more) is detected at a quarter of the scale: its faces are still as large there as a quiet
    scene's at half. Busy scenes (the small-face sweep is on) are never coarse.
    """

    def __init__(self, cfg: DetectConfig, provider: str) -> None:
        self.cfg = cfg
        cpu = provider == "CPUExecutionProvider"
        self.every = cfg.coarse_every if cfg.coarse_every >= 0 else (COARSE_EVERY_CPU if cpu else 0)
        self.frames = 0  # frames detected coarse, for the record
        self.quarter = 0  # of those, at a quarter (close-ups)

    def candidate(self, index: int, sweep: SmallFaceSweep) -> bool:
        """Whether ``index`` could be coarse (then the caller first detects what it has pending,
        so that the decision sees the latest normal-scale frame)."""
        return self.every >= 2 and index % self.every != 0 and index > sweep.busy_until

    def use(self, index: int, detections: Sequence[FrameDetections], sweep: SmallFaceSweep) -> int:
        """How many times ``index`` may be halved for detection (0: the normal scale; 1: a quiet
        scene; 2: a close-up, every face at least ``CLOSE_UP_FACE`` x --min-face), judged from the
        frames detected so far."""
        every = self.every
        if not self.candidate(index, sweep) or len(detections) < every:
            return 0
        recent = detections[-every:]
        if any(crowded(det, self.cfg.threshold, QUIET_FACE * self.cfg.min_face) for det in recent):
            return 0
        return 2 if not any(crowded(det, self.cfg.threshold, CLOSE_UP_FACE * self.cfg.min_face) for det in recent) else 1

    def image(self, image: np.ndarray, scale: float, halvings: int = 1) -> tuple[np.ndarray, float]:
        """``image`` halved ``halvings`` times, and the scale from the source to it."""
        h, w = image.shape[:2]
        f = 1 << halvings
        small = cv2.resize(image, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        self.frames += 1
        self.quarter += halvings > 1
        return small, scale * (w // f) / w


def track_detections(detections: Sequence[FrameDetections], shots: Sequence[Shot], cfg: AnalyzeConfig) -> list[RawTrack]:
    """The analyze pass's tracker call (benchmarks re-run it to get the raw boxes of the same tracks)."""
    return track_video(detections, shots, cfg.track, cfg.detect.threshold, WEAK_MIN_FACE * cfg.detect.min_face)


def make_embedder(cfg: AnalyzeConfig) -> object:
    """The face recognizer of the analysis; it runs where the detector runs (--backend/--device)."""
    from ..embed import FaceEmbedder

    return FaceEmbedder(device=cfg.detect.device, recognizer=cfg.identity.recognizer, backend=cfg.detect.backend)


class FrameAnalysis:
    """The analysis of frames pushed in order: detection (batched, with the small-face sweep and the
    quiet-scene pass), descriptor samples and shot cuts. ``analyze`` pushes a whole file and builds
    the plan; streaming ``run`` pushes frames as they are decoded and reads ``detections`` and
    ``shots`` as they grow, so both paths detect exactly the same faces."""

    def __init__(self, info: VideoInfo, cfg: AnalyzeConfig, detector: FaceDetector | None = None, embedder: object = None) -> None:
        self.info, self.cfg = info, cfg
        self.scale = cfg.detect.detection_scale(info.width, info.height)
        self.detector = detector or create_detector(cfg.detect)
        self.shots = ShotDetector(replace(cfg.shots, enabled=cfg.shots.enabled and not cfg.shots.cut_list), info.avg_rate)
        self.low = cfg.detect.threshold * cfg.track.detect_factor  # what the tracker can use, nothing lower
        self.sampler: DescriptorSampler | None = None
        if cfg.identity.enabled:
            self.sampler = DescriptorSampler(cfg.identity, embedder or make_embedder(cfg))
        self.batch_size = cfg.detect.batch_size or (2 if self.detector.provider == "CPUExecutionProvider" else 16)
        self.detections = DetectionLog()  # every frame's, for the plan: compact (a long clip, a live day)
        self._imgs: list[np.ndarray] = []  # frames at the analysis scale (descriptors are cut from these)
        self._det: list[np.ndarray] = []  # what the detector sees: the same, or half of it on coarse frames
        self._idx: list[int] = []
        self._scale = self.scale  # of the frames in _det (flush reads it)
        self.sweep = SmallFaceSweep(self.detector, cfg.detect, self.low, info.avg_rate)
        self.coarse = CoarsePass(cfg.detect, self.detector.provider)

    @property
    def full_every(self) -> int:
        """How often the decoder must also hand out the full-resolution frame (the sweep's)."""
        return self.cfg.detect.sweep_every if self.scale < 1.0 else 0

    def flush(self) -> None:
        """Detect the frames waiting in the batch."""
        if not self._idx:
            return
        found = [self.sweep.merge(d) for d in self.detector.detect(self._det, self._idx, self._scale, self.low)]
        if self.sampler is not None:
            for img, det in zip(self._imgs, found):
                self.sampler.add(img, det, self.scale, self.cfg.detect.threshold)
        self.detections.extend(found)
        self._imgs.clear()
        self._det.clear()
        self._idx.clear()

    def push(self, frame: Frame) -> None:
        """The next frame (upright, at ``scale``; ``full`` on sweep frames)."""
        self.shots.push(frame.index, frame.image)
        if frame.full is not None:
            self.flush()  # the sweep reads the busy-scene state of the frames before this one
            self.sweep.run(frame, self.detections)
        det_img, det_scale = frame.image, self.scale
        if self._det and self._scale == self.scale and self.coarse.candidate(frame.index, self.sweep):
            self.flush()  # judge the scene with the latest normal-scale frames detected
        halvings = self.coarse.use(frame.index, self.detections, self.sweep)
        if halvings:
            det_img, det_scale = self.coarse.image(frame.image, self.scale, halvings)
        if self._det and (self._det[0].shape != det_img.shape or self._scale != det_scale):
            self.flush()  # coarse/normal switch or resolution change mid-stream: batches must be uniform
        self._scale = det_scale
        self._imgs.append(frame.image)
        self._det.append(det_img)
        self._idx.append(frame.index)
        if len(self._idx) >= self.batch_size:
            self.flush()

    def skip(self, index: int) -> None:
        """Frame ``index`` is not analyzed (live video fell behind): recorded as holding no face, so
        tracks bridge it like a missed detection. The frame itself is dropped or fully blurred."""
        self.flush()
        self.detections.append(FrameDetections.empty(index))

    def shot_list(self, n: int) -> list[Shot]:
        """The shots of ``n`` frames: the cut list given, or the detected cuts."""
        if self.cfg.shots.cut_list:
            return load_cut_list(self.cfg.shots.cut_list, self.info.avg_rate, n)
        return self.shots.finish(n)

    def tracks(self, raw: Sequence[RawTrack], shots: Sequence[Shot]) -> list[Track]:
        """Completed tracks (gaps filled, ends held, smoothed) with their descriptors."""
        info = self.info
        tracks = complete_tracks(raw, shots, self.cfg.track, Scene(info.width, info.height, float(info.avg_rate)))
        if self.sampler is None:
            return tracks
        raw_by_id = {r.track_id: r for r in raw}
        return [with_descriptor(t, self.sampler, raw_by_id[t.track_id]) for t in tracks]

    def identities(self, tracks: Sequence[Track]) -> list[Identity]:
        if self.sampler is None:
            return identities_from_tracks(tracks)
        return build_identities(tracks, self.cfg.identity.link_threshold, linkage=self.cfg.identity.linkage)

    def plan(self, video: str | os.PathLike[str], shots: Sequence[Shot], tracks: Sequence[Track], identities: Sequence[Identity]) -> Plan:
        """The plan of the frames pushed (all of them detected: ``flush`` first)."""
        n = len(self.detections)
        return Plan(
            video=replace(self.info, frame_count=n),
            shots=tuple(shots),
            detections=self.detections,
            tracks=tuple(tracks),
            identities=tuple(identities),
            # what a default render leaves out of this source (io.metadata): the plan records it
            config={
                **self.cfg.to_dict(),
                "detection_scale": self.scale,
                "provider": self.detector.provider,
                "metadata_removed": removed_by_default(video),
            },
            generator=f"deid-edit {__version__}",
        )

    def log_passes(self, n: int) -> None:
        log.info(
            "detection: %d of %d frames at half scale or less (quiet scenes; %d close-ups at a quarter), %d swept at full resolution",
            self.coarse.frames,
            n,
            self.coarse.quarter,
            self.sweep.frames,
        )


def analyze(
    video: str | os.PathLike[str],
    config: AnalyzeConfig | None = None,
    progress: ProgressSink | None = None,
    detector: FaceDetector | None = None,
) -> Plan:
    """Detect faces and shots in every frame and build the plan."""
    cfg = config or AnalyzeConfig()
    progress = progress or NullProgress()
    info = probe(video)
    fa = FrameAnalysis(info, cfg, detector)
    total = info.frame_count
    reader = VideoReader(video, scale=fa.scale, full_every=fa.full_every)
    for frame in reader.frames():
        fa.push(frame)
        progress.update("analyze", frame.index + 1, max(total, frame.index + 1))
    fa.flush()
    n = reader.frames_decoded
    fa.log_passes(n)
    if n == 0:
        raise InputError(f"{video}: no frame could be decoded; re-export the video")
    shot_list = fa.shot_list(n)
    raw = track_detections(fa.detections, shot_list, cfg)
    tracks = fa.tracks(raw, shot_list)
    progress.update("analyze", n, n)
    return fa.plan(video, shot_list, tracks, fa.identities(tracks))


def with_descriptor(track: Track, sampler: DescriptorSampler, raw: RawTrack) -> Track:
    """``track`` with the mean descriptor of its best sampled detections."""
    embedding, n = sampler.track_embedding(raw.frames, raw.det_indices)
    return replace(track, embedding=embedding, embed_samples=n)
