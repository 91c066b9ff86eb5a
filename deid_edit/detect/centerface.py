"""CenterFace (MIT), a small anchor-free face detector with 5 landmarks, run by ONNX Runtime or
PyTorch (``deid_edit.backend``: same graph, same decoding).

Input: batches of same-sized upright RGB frames, already scaled for detection. Output: one
``FrameDetections`` per frame in source pixels. The model wants sides that are multiples of 32;
frames are padded (not stretched) to that, so geometry is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import load_model
from ..geometry import nms
from ..types import FrameDetections

NMS_IOU = 0.3


class CenterFace:
    """CenterFace behind the FaceDetector protocol."""

    name = "centerface"

    def __init__(self, device: str = "auto", threads: int = 0, backend: str = "auto", fp16: bool = False) -> None:
        self.model = load_model("centerface", backend, device, threads, fp16=fp16)
        self.provider: str = self.model.provider
        # a session held to a few threads runs the frames of a batch side by side: two one-thread
        # runs do twice the work of one two-thread run for the same CPU (whose threads wait on
        # each other inside every layer), and a frame's result does not depend on its batch
        self.concurrent = max(1, (os.cpu_count() or 1) // threads) if threads and self.provider == "CPUExecutionProvider" else 1
        self._pool = ThreadPoolExecutor(self.concurrent, thread_name_prefix="deid-detect") if self.concurrent > 1 else None

    def _infer(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        h, w = images[0].shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((len(images), 3, ph, pw), np.float32)
        for b, img in enumerate(images):
            blob[b, :, :h, :w] = img.transpose(2, 0, 1)
        return self.model.run(blob)

    def detect(self, images: Sequence[np.ndarray], frame_indices: Sequence[int], scale: float, threshold: float) -> list[FrameDetections]:
        if not images:
            return []
        h, w = images[0].shape[:2]
        if self._pool is not None and len(images) > 1:
            cuts = np.linspace(0, len(images), min(self.concurrent, len(images)) + 1).astype(int)
            outs = list(self._pool.map(self._infer, [images[a:b] for a, b in zip(cuts[:-1], cuts[1:])]))
            heat, size, offset, lms = (np.concatenate([o[k] for o in outs]) for k in range(4))
        else:
            heat, size, offset, lms = self._infer(images)
        return [self._decode(heat[b, 0], size[b], offset[b], lms[b], (h, w), scale, threshold, idx) for b, idx in enumerate(frame_indices)]

    @staticmethod
    def _decode(
        heat: np.ndarray,
        size: np.ndarray,
        offset: np.ndarray,
        lms: np.ndarray,
        hw: tuple[int, int],
        scale: float,
        threshold: float,
        frame_index: int,
    ) -> FrameDetections:
        ys, xs = np.nonzero(heat > threshold)
        if ys.size == 0:
            return FrameDetections.empty(frame_index)
        h, w = hw
        s0 = np.exp(size[0, ys, xs]) * 4.0
        s1 = np.exp(size[1, ys, xs]) * 4.0
        x1 = np.clip((xs + offset[1, ys, xs] + 0.5) * 4.0 - s1 / 2, 0, w)
        y1 = np.clip((ys + offset[0, ys, xs] + 0.5) * 4.0 - s0 / 2, 0, h)
        x2 = np.minimum(x1 + s1, w)
        y2 = np.minimum(y1 + s0, h)
        boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        scores = heat[ys, xs].astype(np.float32)
        lx = lms[1::2, ys, xs].T * s1[:, None] + x1[:, None]
        ly = lms[0::2, ys, xs].T * s0[:, None] + y1[:, None]
        marks = np.stack([lx, ly], axis=2).astype(np.float32)
        keep = nms(boxes, scores, NMS_IOU)
        inv = np.float32(1.0 / scale)
        return FrameDetections(frame_index, boxes[keep] * inv, scores[keep], marks[keep] * inv)
