"""The audit's report: leaked face-frames by identity, uncovered heads, metadata; text and JSON.

Input: what ``audit.check`` found. Output: ``AuditReport`` with ``summary()`` for people and
``to_json()`` (schema ``deid_edit.Audit.1``) for machines; ``ok`` decides the CLI's exit code 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from ..coverage import KEPT_DETAIL, UncoveredHead
from ..plan import frac_str
from ..timefmt import clock
from .chips import NOISE_MARGIN

SCHEMA = "deid_edit.Audit.1"
EXIT_LEAK = 3  # the CLI's exit code when the report is not ok (1 and 2 keep their usual meaning)
SUMMARY_RANGES = 12  # timecode ranges listed per identity in the summary


class ProgressLike(Protocol):
    def update(self, stage: str, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class AuditLeak:
    """One face in one frame whose anonymized crop still matches the original face."""

    frame_index: int  # in the original
    time: Fraction  # seconds since the original's first frame (what players show)
    timecode: str  # HH:MM:SS.mmm of ``time``
    identity_id: int | None  # plan identity; the audit's own track id without a plan; None: no plan track
    box: tuple[float, float, float, float]  # xyxy, upright pixels of the original
    distance: float  # L2 between the two descriptors; below the threshold means "same person"
    baseline: float | None = None  # L2 from the original to the nearest identity-free reference (>= threshold)


@dataclass(frozen=True)
class AuditReport:
    """What the audit found; ``ok`` is the verdict, ``summary()`` for people, ``to_json()`` for programs."""

    original: str
    anonymized: str
    face_frames: int  # faces compared (original faces meant to be anonymized, big enough, in paired frames)
    leaks: tuple[AuditLeak, ...]
    longest_run: int  # most consecutive frames in which one face/identity leaked
    frames_compared: int  # original frames paired with an anonymized frame
    frames_unmatched: int  # original frames without a partner within half a frame
    threshold: float
    faces_unchecked: int = 0  # faces in unmatched frames: could not be audited (fail closed)
    faces_small: int = 0  # faces below ``min_face``: not compared (recognisers fail on them too)
    faces_unrecognisable: int = 0  # faces an identity-free chip already matches: the recogniser cannot judge them
    faces_kept: int = 0  # faces of identities the plan keeps visible
    faces_borderline: int = 0  # compared faces under the threshold but within NOISE_MARGIN of an identity-free face
    min_distance: float | None = None  # closest pair seen: how near the output came to leaking
    time_offset: Fraction = Fraction(0)  # anonymized time - original time used for pairing
    match: str = "time"  # how frames were paired: "time", "start" (relative to first frames) or "index"
    with_plan: bool = False  # identity ids are the plan's (else the audit's own face tracks)
    heads_checked: int = 0  # head samples of the audit's own plan whose face area was compared pixel by pixel
    heads_flat: int = 0  # head samples too flat (dark, featureless) to show a change
    heads_uncovered: tuple[UncoveredHead, ...] = ()  # heads the copy leaves (mostly) unchanged
    sheet: str | None = None  # PNG of the uncovered heads, original beside copy
    metadata: tuple[str, ...] = ()  # tags and streams of the copy that can locate or identify the source (io.metadata)

    @property
    def ok(self) -> bool:
        """True when no face leaked, no head was left uncovered, every detected face could be
        checked and the copy carries no identifying metadata. Heads found only at low detector
        scores ("maybe no face") are listed for a person to look at but do not fail the audit on
        their own."""
        return not self.leaks and self.faces_unchecked == 0 and not self.sure_uncovered and not self.metadata

    @property
    def sure_uncovered(self) -> tuple[UncoveredHead, ...]:
        return tuple(h for h in self.heads_uncovered if not h.weak)

    @property
    def nothing_checked(self) -> bool:
        """No face was compared by the recognizer and no head by its pixels: an OK would mean nothing."""
        return self.face_frames == 0 and self.heads_checked == 0

    @property
    def leak_fraction(self) -> float:
        return len(self.leaks) / self.face_frames if self.face_frames else 0.0

    def by_identity(self) -> dict[int | None, list[AuditLeak]]:
        """Leaks grouped by identity, in order of first appearance."""
        groups: dict[int | None, list[AuditLeak]] = {}
        for leak in self.leaks:
            groups.setdefault(leak.identity_id, []).append(leak)
        return groups

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (Fractions as "num/den" strings, as in the plan, plus float seconds)."""
        return {
            "schema": SCHEMA,
            "original": self.original,
            "anonymized": self.anonymized,
            "ok": self.ok,
            "threshold": self.threshold,
            "face_frames": self.face_frames,
            "leak_count": len(self.leaks),
            "leak_fraction": round(self.leak_fraction, 6),
            "longest_run": self.longest_run,
            "frames_compared": self.frames_compared,
            "frames_unmatched": self.frames_unmatched,
            "faces_unchecked": self.faces_unchecked,
            "faces_small": self.faces_small,
            "faces_unrecognisable": self.faces_unrecognisable,
            "faces_kept": self.faces_kept,
            "faces_borderline": self.faces_borderline,
            "min_distance": None if self.min_distance is None else round(self.min_distance, 4),
            "match": self.match,
            "nothing_checked": self.nothing_checked,
            "heads_checked": self.heads_checked,
            "heads_flat": self.heads_flat,
            "heads_uncovered": [
                {
                    "frame": h.frame_index,
                    "seconds": round(float(h.time), 6),
                    "timecode": timecode(h.time),
                    "box": [round(v, 1) for v in h.box],
                    "kept_detail": round(h.kept, 3),
                    "maybe_no_face": h.weak,
                    "held": h.held,
                }
                for h in self.heads_uncovered
            ],
            "sheet": self.sheet,
            "metadata": list(self.metadata),
            "identity_source": "plan" if self.with_plan else "track",
            "time_offset": frac_str(self.time_offset),
            "identities": [
                {
                    "identity_id": ident,
                    "leaks": len(items),
                    "ranges": [
                        {"start_frame": a.frame_index, "end_frame": b.frame_index, "start": a.timecode, "end": b.timecode}
                        for a, b in _ranges(items)
                    ],
                }
                for ident, items in self.by_identity().items()
            ],
            "leaks": [
                {
                    "frame": leak.frame_index,
                    "time": frac_str(leak.time),
                    "seconds": round(float(leak.time), 6),
                    "timecode": leak.timecode,
                    "identity_id": leak.identity_id,
                    "box": [round(v, 1) for v in leak.box],
                    "distance": round(leak.distance, 4),
                    "baseline": None if leak.baseline is None else round(leak.baseline, 4),
                }
                for leak in self.leaks
            ],
        }

    def summary(self) -> str:
        """Human text: verdict, counts, leaks per identity as timecode ranges, longest run."""
        lines = [f"Audit of {self.anonymized}", f"  against {self.original}"]
        if self.nothing_checked and self.ok:
            lines.append("  NOTHING CHECKED: no face of the original could be compared (none found, or all too small, flat or kept)")
        elif self.ok:
            lines.append("  OK: no anonymized face is recognisable as its original, and no head was left uncovered")
        else:
            lines.append(
                f"  NOT OK: {len(self.leaks)} leaked face-frames, {len(self.sure_uncovered)} uncovered heads, "
                f"{self.faces_unchecked} unchecked, {len(self.metadata)} identifying metadata entries (exit code {EXIT_LEAK})"
            )
        if self.metadata:
            lines.append(f"  metadata that can locate or identify the source: {', '.join(self.metadata)}")
        lines.append(
            f"  {self.heads_checked} head-frames checked pixel by pixel (a head is uncovered when the copy keeps its facial "
            f"detail, correlation >= {KEPT_DETAIL:g}){f'; {self.heads_flat} too flat to tell' if self.heads_flat else ''}"
        )
        if self.heads_uncovered:
            weak = len(self.heads_uncovered) - len(self.sure_uncovered)
            frames = sorted({h.frame_index for h in self.heads_uncovered})
            shown = ", ".join(str(f) for f in frames[: SUMMARY_RANGES * 2]) + (" ..." if len(frames) > SUMMARY_RANGES * 2 else "")
            lines.append(
                f"  uncovered heads: {len(self.heads_uncovered)} head-frames"
                + (f" ({weak} maybe no face)" if weak else "")
                + f" in frames {shown}"
                + (f"; look at them: {self.sheet}" if self.sheet else "")
            )
        closest = "" if self.min_distance is None else f"; closest pair {self.min_distance:.3f}"
        lines.append(f"  {self.face_frames} face-frames compared (leak when L2 < {self.threshold:g}{closest})")
        frames = f"  {self.frames_compared} frames paired by {self.match}"
        if self.time_offset:
            frames += f" (anonymized clock shifted by {float(self.time_offset):+.3f} s)"
        if self.frames_unmatched:
            frames += f", {self.frames_unmatched} original frames without a partner"
        lines.append(frames)
        if self.faces_borderline:
            lines.append(
                f"  {self.faces_borderline} face-frames under {self.threshold:g} but matched no better than an identity-free face "
                f"(within {NOISE_MARGIN:g}): borderline, not leaks"
            )
        skipped = [
            (self.faces_small, "too small"),
            (self.faces_unrecognisable, "unrecognisable (a blank or featureless face already matches them)"),
            (self.faces_kept, "kept by the plan"),
            (self.faces_unchecked, "unchecked (no partner frame)"),
        ]
        if any(n for n, _ in skipped):
            lines.append("  faces not compared: " + ", ".join(f"{n} {why}" for n, why in skipped if n))
        if self.leaks:
            lines.append(f"  leaks: {len(self.leaks)} face-frames ({100 * self.leak_fraction:.1f}%), longest run {self.longest_run} frames")
            for ident, items in self.by_identity().items():
                name = "face outside the plan" if ident is None else f"identity {ident}" if self.with_plan else f"face {ident}"
                ranges = _ranges(items)
                parts = [
                    a.timecode if a is b else f"{a.timecode}-{b.timecode} ({b.frame_index - a.frame_index + 1} frames)" for a, b in ranges
                ]
                more = f", ... {len(parts) - SUMMARY_RANGES} more ranges" if len(parts) > SUMMARY_RANGES else ""
                lines.append(f"    {name}: {len(items)} face-frames: {', '.join(parts[:SUMMARY_RANGES])}{more}")
        if self.frames_unmatched and self.frames_compared < self.frames_unmatched:
            lines.append("  most frames found no partner: if the anonymized video was re-timed to a constant rate, pair them by index")
        return "\n".join(lines)


# -- pairing frames ---------------------------------------------------------------------------


def timecode(seconds: Fraction) -> str:
    """HH:MM:SS.mmm, rounded to the millisecond (negative offsets clamp to zero)."""
    return clock(max(Fraction(seconds), Fraction(0)))


def _ranges(leaks: Sequence[AuditLeak]) -> list[tuple[AuditLeak, AuditLeak]]:
    """Consecutive-frame stretches of ``leaks`` (sorted by frame), as (first, last) pairs."""
    out: list[tuple[AuditLeak, AuditLeak]] = []
    for leak in sorted(leaks, key=lambda x: x.frame_index):
        if out and leak.frame_index <= out[-1][1].frame_index + 1:
            out[-1] = (out[-1][0], leak)
        else:
            out.append((leak, leak))
    return out


def longest_run(frames_by_key: dict[Any, set[int]]) -> int:
    """Most consecutive frame indices held by any one key."""
    best = 0
    for frames in frames_by_key.values():
        run, prev = 0, None
        for f in sorted(frames):
            run = run + 1 if prev is not None and f == prev + 1 else 1
            prev = f
            best = max(best, run)
    return best


# -- the audit --------------------------------------------------------------------------------
