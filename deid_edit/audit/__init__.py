"""Audit: does an anonymized video still show the faces of its original?

Input: the ORIGINAL, its ANONYMIZED copy (made by any tool) and optionally the original's plan.
Output: an ``AuditReport`` (leaked face-frames by identity, uncovered heads from ``coverage``,
identifying metadata; text or JSON); the CLI exits ``EXIT_LEAK`` (3) when it is not ok. Why
independent of the engine's plan: faces are re-detected at full resolution, frames paired by time,
and the aligned chip embedded in both videos. A face leaks only when the copy matches the original
better, by ``NOISE_MARGIN`` (the recognizer's frame-to-frame noise on an untouched face), than
identity-free stand-ins (black, mean-colour fill, ``featureless``); a face such a stand-in already
matches cannot be judged. Fails closed: a face whose frame has no partner makes the report not ok.
"""

from .check import audit
from .chips import NOISE_MARGIN, face_mask, faceless, featureless, scale_points
from .pairing import TimedFrame, check_sizes, pair_frames
from .report import EXIT_LEAK, SCHEMA, AuditLeak, AuditReport, longest_run, timecode

__all__ = [
    "EXIT_LEAK",
    "NOISE_MARGIN",
    "SCHEMA",
    "AuditLeak",
    "AuditReport",
    "TimedFrame",
    "audit",
    "check_sizes",
    "face_mask",
    "faceless",
    "featureless",
    "longest_run",
    "pair_frames",
    "scale_points",
    "timecode",
]
