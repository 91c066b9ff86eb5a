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
from ..detect import FaceDetector, create_detector
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
from ..types import Frame, FrameDetections, Shot, Track

log = logging.getLogger(__name__)


WEAK_MIN_FACE = 0.5  # weak tracks start from low-score boxes at least this x --min-face (hamilton's dim faces: 25-60 px)
BUSY_FACES = 3  # a frame with this many faces, or with a face under 2x --min-face, is a busy scene
BUSY_HOLD = 2  # seconds a busy scene keeps the full-resolution sweep on
QUIET_FACE = 4  # a quiet scene's faces are all at least this x --min-face (and fewer than BUSY_FACES)
COARSE_EVERY_CPU = 3  # DetectConfig.coarse_every when automatic, on the CPU


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

    def run(self, frame: Frame, detections: list[FrameDetections]) -> None:
        """Update the busy state from recent detections; sweep ``frame`` if busy (merged by ``merge``)."""
        for det in detections[-self.cfg.sweep_every :]:
            if crowded(det, self.cfg.threshold, 2 * self.cfg.min_face):
                self.busy_until = det.frame_index + self.hold
        if frame.full is None or frame.index > self.busy_until:
            return
        self.frames += 1
        (full,) = self.detector.detect([frame.full], [frame.index], 1.0, self.low)
        self.pending = (frame.index, full)

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
    and the scene stops being quiet. Busy scenes (the small-face sweep is on) are never coarse.
    """

    def __init__(self, cfg: DetectConfig, provider: str) -> None:
        self.cfg = cfg
        cpu = provider == "CPUExecutionProvider"
        self.every = cfg.coarse_every if cfg.coarse_every >= 0 else (COARSE_EVERY_CPU if cpu else 0)
        self.frames = 0  # frames detected coarse, for the record

    def candidate(self, index: int, sweep: SmallFaceSweep) -> bool:
        """Whether ``index`` could be coarse (then the caller first detects what it has pending,
        so that the decision sees the latest normal-scale frame)."""
        return self.every >= 2 and index % self.every != 0 and index > sweep.busy_until

    def use(self, index: int, detections: list[FrameDetections], sweep: SmallFaceSweep) -> bool:
        """Whether ``index`` may be detected at half scale, judged from the frames detected so far."""
        every = self.every
        if not self.candidate(index, sweep) or len(detections) < every:
            return False
        return not any(crowded(det, self.cfg.threshold, QUIET_FACE * self.cfg.min_face) for det in detections[-every:])

    def image(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
        """``image`` at half size, and the scale from the source to it."""
        h, w = image.shape[:2]
        half = cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        self.frames += 1
        return half, scale * (w // 2) / w


def track_detections(detections: Sequence[FrameDetections], shots: Sequence[Shot], cfg: AnalyzeConfig) -> list[RawTrack]:
    """The analyze pass's tracker call (benchmarks re-run it to get the raw boxes of the same tracks)."""
    return track_video(detections, shots, cfg.track, cfg.detect.threshold, WEAK_MIN_FACE * cfg.detect.min_face)


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
    scale = cfg.detect.detection_scale(info.width, info.height)
    detector = detector or create_detector(cfg.detect)
    shots = ShotDetector(replace(cfg.shots, enabled=cfg.shots.enabled and not cfg.shots.cut_list), info.avg_rate)
    low = cfg.detect.threshold * cfg.track.detect_factor  # what the tracker can use, nothing lower
    sampler = None
    if cfg.identity.enabled:
        from ..embed import FaceEmbedder

        # the recognizer runs where the detector runs (--backend/--device)
        embedder = FaceEmbedder(device=cfg.detect.device, recognizer=cfg.identity.recognizer, backend=cfg.detect.backend)
        sampler = DescriptorSampler(cfg.identity, embedder)
    batch_size = cfg.detect.batch_size or (2 if detector.provider == "CPUExecutionProvider" else 16)
    detections: list[FrameDetections] = []
    batch_imgs: list = []  # frames at the analysis scale (descriptors are cut from these)
    batch_det: list = []  # what the detector sees: the same, or half of it on coarse frames
    batch_idx: list[int] = []
    batch_scale = scale  # of the frames in batch_det (flush reads it)
    total = info.frame_count

    def flush() -> None:
        if batch_idx:
            found = [sweep.merge(d) for d in detector.detect(batch_det, batch_idx, batch_scale, low)]
            if sampler is not None:
                for img, det in zip(batch_imgs, found):
                    sampler.add(img, det, scale, cfg.detect.threshold)
            detections.extend(found)
            batch_imgs.clear()
            batch_det.clear()
            batch_idx.clear()

    sweep = SmallFaceSweep(detector, cfg.detect, low, info.avg_rate)
    coarse = CoarsePass(cfg.detect, detector.provider)
    reader = VideoReader(video, scale=scale, full_every=cfg.detect.sweep_every if scale < 1.0 else 0)
    for frame in reader.frames():
        shots.push(frame.index, frame.image)
        if frame.full is not None:
            flush()  # the sweep reads the busy-scene state of the frames before this one
            sweep.run(frame, detections)
        det_img, det_scale = frame.image, scale
        if batch_det and batch_scale == scale and coarse.candidate(frame.index, sweep):
            flush()  # judge the scene with the latest normal-scale frames detected
        if coarse.use(frame.index, detections, sweep):
            det_img, det_scale = coarse.image(frame.image, scale)
        if batch_det and (batch_det[0].shape != det_img.shape or batch_scale != det_scale):
            flush()  # coarse/normal switch or resolution change mid-stream: batches must be uniform
        batch_scale = det_scale
        batch_imgs.append(frame.image)
        batch_det.append(det_img)
        batch_idx.append(frame.index)
        if len(batch_idx) >= batch_size:
            flush()
        progress.update("analyze", frame.index + 1, max(total, frame.index + 1))
    flush()
    n = reader.frames_decoded
    log.info("detection: %d of %d frames at half scale (quiet scenes), %d swept at full resolution", coarse.frames, n, sweep.frames)
    if n == 0:
        raise InputError(f"{video}: no frame could be decoded; re-export the video")
    if cfg.shots.cut_list:
        shot_list = load_cut_list(cfg.shots.cut_list, info.avg_rate, n)
    else:
        shot_list = shots.finish(n)
    raw = track_detections(detections, shot_list, cfg)
    tracks = complete_tracks(raw, shot_list, cfg.track, Scene(info.width, info.height, float(info.avg_rate)))
    if sampler is not None:
        raw_by_id = {r.track_id: r for r in raw}
        tracks = [with_descriptor(t, sampler, raw_by_id[t.track_id]) for t in tracks]
        identities = build_identities(tracks, cfg.identity.link_threshold, linkage=cfg.identity.linkage)
    else:
        identities = identities_from_tracks(tracks)
    info = replace(info, frame_count=n)
    progress.update("analyze", n, n)
    return Plan(
        video=info,
        shots=tuple(shot_list),
        detections=tuple(detections),
        tracks=tuple(tracks),
        identities=tuple(identities),
        # what a default render leaves out of this source (io.metadata): the plan records it
        config={**cfg.to_dict(), "detection_scale": scale, "provider": detector.provider, "metadata_removed": removed_by_default(video)},
        generator=f"deid-edit {__version__}",
    )


def with_descriptor(track: Track, sampler: DescriptorSampler, raw: RawTrack) -> Track:
    """``track`` with the mean descriptor of its best sampled detections."""
    embedding, n = sampler.track_embedding(raw.frames, raw.det_indices)
    return replace(track, embedding=embedding, embed_samples=n)
