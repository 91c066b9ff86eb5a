"""Who was found, from the plan alone: per-identity summaries, the terminal table, what --keep leaves.

Input: a ``Plan`` (and, for ``kept_lines``, the selection's report). Output: one ``IdentitySummary``
per identity (screen time, shots, tracks, first appearance, best frames), ``format_table`` and
``kept_lines`` for the terminal. Next: ``faces.sheet`` draws the chosen frames; the editor chooses who
is kept, then render. Best frames are chosen from the plan's numbers (score, frontality, size, share
inside the frame), so the pictures cost one decode that stops at the last chosen frame; nothing
here decodes or detects, so what is listed is exactly what render acts on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..identities import SelectionReport, frontality
from ..plan import Plan
from ..timefmt import clock, timecode
from ..types import Track, VideoInfo

UNASSIGNED = -1  # identity_id of the summary gathering tracks no identity claims (render anonymizes them)
BEST_PER_IDENTITY = 12  # one thumbnail per track: a wrong link shows as a stranger in the strip


@dataclass(frozen=True)
class IdentitySummary:
    """What an editor needs to decide about one person, computed from the plan.

    ``frames`` counts distinct frames in which any of the identity's tracks is present, observed or
    interpolated (both are anonymized, so both are screen time). ``first_timecode`` is
    ``HH:MM:SS:FF`` counted in the rounded nominal rate (what an NLE shows for frame
    ``first_frame`` of a file starting at 00:00:00:00); ``first_clock`` is ``HH:MM:SS.mmm`` of real
    time. ``best_frames`` are the frames whose crops show the face best, best first.
    """

    identity_id: int
    label: str
    action: str
    tracks: int
    shots: int
    frames: int
    screen_time: Fraction  # seconds
    first_frame: int  # -1 when the identity has no samples
    first_timecode: str
    first_clock: str
    first_time: Fraction | None  # seconds from the first frame
    best_frames: tuple[int, ...]
    thumbnail: str | None = None
    best_score: float = 0.0  # highest detector score of any observation
    # Only weak tracks (never above --threshold): a dim face, or not a face at all. Masked either way
    # (fail closed); the editor is told so the row is not mistaken for a sure face.
    low_confidence: bool = False
    # Largest descriptor distance between two of its identifiable tracks; from ``link_threshold`` up
    # the tracks disagree (a hand-edited or older plan, or average linkage): check for a wrong link.
    spread: float = 0.0
    disagree: bool = False


# -- time -------------------------------------------------------------------------------------


def frame_duration(video: VideoInfo) -> Fraction:
    """Seconds per frame: the average rate, else duration / frames (exact for CFR, the mean for VFR)."""
    if video.avg_rate and video.avg_rate > 0:
        return 1 / Fraction(video.avg_rate)
    if video.duration and video.frame_count:
        return Fraction(video.duration) / video.frame_count
    return Fraction(1, 25)


# -- choosing the best frames from the plan ---------------------------------------------------


def _sample_terms(track: Track, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(face side in px, quality without the size term) per sample of a track.

    A face cut by the frame edge makes a poor picture of someone: the visible fraction counts
    squared. Samples that were interpolated, not detected, never qualify (their boxes are guesses).
    """
    b = np.asarray(track.boxes, np.float64)
    w = np.clip(b[:, 2] - b[:, 0], 0, None)
    h = np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(b[:, 2], width) - np.maximum(b[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(b[:, 3], height) - np.maximum(b[:, 1], 0), 0, None)
    area = w * h
    inside = np.where(area > 0, iw * ih / np.where(area > 0, area, 1.0), 0.0)
    score = np.clip(np.asarray(track.scores, np.float64), 0.0, 1.0)
    base = score * (0.25 + 0.75 * frontality(track.landmarks, len(b))) * inside**2
    base = np.where(np.asarray(track.observed, bool), base, -np.inf)
    return np.sqrt(area), base


def choose_best(tracks: Sequence[Track], width: int, height: int, count: int) -> tuple[int, ...]:
    """Up to ``count`` frames that show the identity well: the best first, the others in time order.

    Quality = detector score x frontality x visible fraction² x size (relative to the identity's
    largest face). First every shot gets its best frame, then every other track, then the best
    remaining frames at least ``observed samples / (count + 1)`` frames from any chosen one (halved
    while none is left), so a row shows the person at different moments, not six copies of one.
    """
    if count <= 0 or not tracks:
        return ()
    sides, bases, frames, track_pos, shots = [], [], [], [], []
    for k, t in enumerate(tracks):
        side, base = _sample_terms(t, width, height)
        sides.append(side)
        bases.append(base)
        frames.append(np.asarray(t.frames, np.int64))
        track_pos.append(np.full(len(t.frames), k))
        shots.append(np.full(len(t.frames), t.shot_index))
    side, base = np.concatenate(sides), np.concatenate(bases)
    frame, tpos, shot = np.concatenate(frames), np.concatenate(track_pos), np.concatenate(shots)
    valid = np.isfinite(base)
    if not valid.any():  # nothing detected (only possible in hand-made plans): show what there is
        valid[:] = True
        base = np.zeros_like(side) + 1e-6
    biggest = side[valid].max() if valid.any() else 0.0
    quality = np.where(valid, base * (0.3 + 0.7 * side / biggest if biggest > 0 else 1.0), -np.inf)
    order = np.argsort(-quality, kind="stable")
    order = order[valid[order]]
    chosen: list[int] = [int(order[0])] if len(order) else []
    for key in (shot, tpos):  # the best of each shot, then of each track not yet shown
        _, first = np.unique(key[order], return_index=True)  # first in quality order = best of each
        for i in order[np.sort(first)].tolist():
            if len(chosen) < count and key[i] not in {key[j] for j in chosen}:
                chosen.append(i)
    spacing = max(1, int(valid.sum()) // (count + 1))
    dist = np.full(len(frame), np.iinfo(np.int64).max)
    for i in chosen:
        dist = np.minimum(dist, np.abs(frame - frame[i]))
    while len(chosen) < count:  # the best frames far enough from those chosen; closer when none is left
        ok = dist[order] >= spacing
        if ok.any():
            i = int(order[np.argmax(ok)])
            chosen.append(i)
            dist = np.minimum(dist, np.abs(frame - frame[i]))
        elif spacing > 1:
            spacing //= 2
        else:
            break
    best_first = chosen[:1] + sorted(chosen[1:], key=lambda i: int(frame[i]))
    return tuple(dict.fromkeys(int(frame[i]) for i in best_first))  # overlapping tracks may share a frame


# -- summaries ---------------------------------------------------------------------------------


def track_frames(tracks: Sequence[Track], width: int, height: int, count: int) -> tuple[int, ...]:
    """One frame per track (its best face), in time order, for up to ``count`` tracks: the row is a
    strip of the identity's tracks, so a wrong link shows as a stranger in it. With more tracks
    than slots, the best-identifiable ones (most descriptor samples, then longest) are shown; a
    single track gets ``choose_best``'s spread of frames instead."""
    if len(tracks) <= 1:
        return choose_best(tracks, width, height, count)
    ranked = sorted(tracks, key=lambda t: (-t.embed_samples, -len(t.frames), t.start))[:count]
    frames = [choose_best([t], width, height, 1) for t in sorted(ranked, key=lambda t: t.start)]
    return tuple(dict.fromkeys(f[0] for f in frames if f))


def track_spread(tracks: Sequence[Track]) -> float:
    """Largest L2 distance between two identifiable tracks' descriptors (0 with fewer than two)."""
    vecs = [t.embedding for t in tracks if t.embedding is not None]
    if len(vecs) < 2:
        return 0.0
    v = np.stack(vecs)
    return float(np.linalg.norm(v[:, None] - v[None], axis=2).max())


def summarize(plan: Plan, best: int = BEST_PER_IDENTITY) -> list[IdentitySummary]:
    """One summary per identity, ordered by first appearance (then id); from the plan alone.

    Tracks that no identity claims are still anonymized by the renderer, so they are listed too,
    together, as identity ``UNASSIGNED`` (-1) rather than silently left out of what the editor sees.
    Identities that own no samples come last.
    """
    step = frame_duration(plan.video)
    limit = plan.link_threshold
    out = []
    for identity_id, label, action, ts in groups(plan):
        spread = track_spread(ts)
        frames = np.unique(np.concatenate([np.asarray(t.frames, np.int64) for t in ts])) if ts else np.zeros(0, np.int64)
        first = int(frames[0]) if len(frames) else -1
        first_time = first * step if first >= 0 else None
        out.append(
            IdentitySummary(
                identity_id=identity_id,
                label=label,
                action=action,
                tracks=len(ts),
                shots=len({t.shot_index for t in ts}),
                frames=len(frames),
                screen_time=len(frames) * step,
                first_frame=first,
                first_timecode=timecode(first, plan.video.avg_rate or 1 / step),
                first_clock=clock(first_time),
                first_time=first_time,
                best_frames=track_frames(ts, plan.video.width, plan.video.height, best),
                best_score=max((float(t.scores[t.observed].max()) for t in ts if t.observed.any()), default=0.0),
                low_confidence=bool(ts) and all(plan.is_weak(t.track_id) for t in ts),
                spread=spread,
                disagree=spread >= limit,
            )
        )
    out.sort(key=lambda s: (s.first_frame < 0, s.first_frame, s.identity_id))
    return out


def groups(plan: Plan) -> list[tuple[int, str, str, list[Track]]]:
    """(identity id, label, action, tracks) per identity, plus the unclaimed tracks as ``UNASSIGNED``."""
    tracks_by_id = {t.track_id: t for t in plan.tracks}
    groups = [(i.identity_id, i.label, i.action, [tracks_by_id[k] for k in i.track_ids if k in tracks_by_id]) for i in plan.identities]
    claimed = {k for i in plan.identities for k in i.track_ids}
    loose = [t for t in plan.tracks if t.track_id not in claimed]
    return groups + ([(UNASSIGNED, "(no identity)", "anonymize", loose)] if loose else [])


def format_table(summaries: Sequence[IdentitySummary]) -> str:
    """A plain-text table, one line per identity, for the terminal (``deid-edit faces``)."""
    if not summaries:
        return "no faces found"
    head = ("id", "label", "action", "screen s", "frames", "shots", "tracks", "score", "first seen", "at", "check")
    rows = [
        (
            str(s.identity_id),
            s.label,
            s.action,
            f"{float(s.screen_time):.2f}",
            str(s.frames),
            str(s.shots),
            str(s.tracks),
            f"{s.best_score:.2f}" + (" low" if s.low_confidence else ""),
            s.first_timecode,
            s.first_clock,
            f"tracks disagree ({s.spread:.2f})" if s.disagree else "",
        )
        for s in summaries
    ]
    right = {0, 3, 4, 5, 6}
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def count_noun(n: int, noun: str) -> str:
    """``1 track``, ``2 tracks``."""
    return f"{n} {noun}{'s' * (n != 1)}"


# -- who stays visible -------------------------------------------------------------------------


def kept_lines(plan: Plan, report: SelectionReport, photos: Sequence[str] = ()) -> list[str]:
    """What a selection leaves visible, for the terminal: kept tracks per identity with screen
    time, tracks of a kept identity anonymized anyway (and why), photos that matched nobody."""
    step = frame_duration(plan.video)
    by_id = {t.track_id: t for t in plan.tracks}
    kept = [c for c in report.choices if c.kept]
    frames = {f for c in kept for f in by_id[c.track_id].frames.tolist()}
    total = plan.video.frame_count * step
    share = f" ({float(len(frames) * step / total):.0%} of the video)" if total > 0 else ""
    idents = sorted({c.identity_id for c in kept})
    lines = [
        f"kept visible: {count_noun(len(kept), 'track')} of {count_noun(len(idents), 'identity')}, "
        f"{float(len(frames) * step):.1f} s on screen{share}"
        if kept
        else "kept visible: nobody (every face is anonymized)"
    ]
    for n in idents:
        mine = [c for c in kept if c.identity_id == n]
        secs = len({f for c in mine for f in by_id[c.track_id].frames.tolist()}) * step
        tracks = ", ".join(f"{c.track_id} (shot {by_id[c.track_id].shot_index}, {clock(by_id[c.track_id].start * step)})" for c in mine)
        lines.append(f"  person {n}: {float(secs):.1f} s, tracks {tracks}; {mine[0].reason}")
    for c in report.dropped():
        lines.append(f"  anonymized although linked to kept person {c.identity_id}: track {c.track_id}: {c.reason}")
    for p in report.unmatched_photos:
        name = photos[p] if p < len(photos) else f"photo {p + 1}"
        close = report.closest[p] if p < len(report.closest) else float("inf")
        lines.append(f"  {name}: matches no face in the video (closest {close:.2f})")
    return lines
