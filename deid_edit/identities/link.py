"""Tracks linked across cuts into identities: the same person in every shot gets one identity.

Input: the tracks of the whole video with their descriptors. Output: ``Identity`` records (next: the
plan). Tracklets broken inside a shot are stitched first; tracks are then clustered (average or
complete linkage) under cannot-link constraints (two tracks visible in the same frame are two
people) with the recognizer's L2 threshold, calibrated on LFW. Identity ids follow first appearance.
Why constraints: one identity holding two people would keep a stranger visible under --keep.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import Identity, Track

# Tracklet stitching (see ``stitch_tracks``): how long a face may be lost inside a shot, and how far
# (in face widths) it may have moved meanwhile, growing with the gap (camera pans, people moving).
STITCH_MAX_GAP = 15
# The gap is counted between the two tracks' detections less this slack: the constants were tuned
# when every track ended 4 frames after its last detection (TrackConfig.extend), before track ends
# could be held much further (smooth.plan_ends).
STITCH_SLACK = 8
STITCH_BASE_WIDTHS = 1.0
STITCH_WIDTHS_PER_FRAME = 0.1


def _seen(t: Track) -> np.ndarray:
    """Indices of a track's detected samples (all of them if none is marked detected)."""
    idx = np.flatnonzero(t.observed)
    return idx if len(idx) else np.arange(len(t.frames))


def stitch_tracks(tracks: Sequence[Track]) -> list[list[int]]:
    """Chains of track indices that are one face lost and found again inside a shot.

    Why: the detector loses dark, small and turned faces for a few frames (hamilton_stage.mp4's
    audience during a pan, a profile leaving and re-entering), so the tracker starts a new track.
    Those faces are exactly the ones without a usable descriptor, so linking cannot join them.
    Here a track joins the one that ended shortly before in the same shot (at most
    ``STITCH_MAX_GAP`` frames) near where it ended (centre distance within
    ``STITCH_BASE_WIDTHS + STITCH_WIDTHS_PER_FRAME * gap`` face widths, sizes within 1.5x),
    greedily by normalized distance, one successor per track.

    Only tracks WITHOUT a descriptor are stitched: a stitch is a guess by position, and a guessed
    join into an identifiable identity could carry someone else's face into a person the user
    keeps. Unidentifiable chains stay unidentifiable, so ``select`` still anonymizes them.
    """
    cands: list[tuple[float, int, int]] = []
    for a, ta in enumerate(tracks):
        if ta.embedding is not None:
            continue
        # from the last detection of one to the first of the other: held track ends
        # (smooth.plan_ends) may reach far past a detection, into the next track
        la = int(_seen(ta)[-1])
        last_a, box_a = int(ta.frames[la]), ta.boxes[la]
        wa = float(box_a[2] - box_a[0])
        ca = (box_a[:2] + box_a[2:]) / 2
        for b, tb in enumerate(tracks):
            fb = int(_seen(tb)[0])
            gap = max(0, int(tb.frames[fb]) - last_a - 1 - STITCH_SLACK) if int(tb.frames[fb]) > last_a else -1
            if tb.embedding is not None or tb.shot_index != ta.shot_index or not 0 <= gap <= STITCH_MAX_GAP:
                continue
            box_b = tb.boxes[fb]
            wb = float(box_b[2] - box_b[0])
            if min(wa, wb) <= 0 or max(wa, wb) / min(wa, wb) > 1.5:
                continue
            moved = float(np.linalg.norm((box_b[:2] + box_b[2:]) / 2 - ca)) / ((wa + wb) / 2)
            if moved <= STITCH_BASE_WIDTHS + STITCH_WIDTHS_PER_FRAME * gap:
                cands.append((moved, a, b))
    succ: dict[int, int] = {}
    pred: dict[int, int] = {}
    for _, a, b in sorted(cands):
        if a not in succ and b not in pred:
            succ[a], pred[b] = b, a
    chains = []
    for start in range(len(tracks)):
        if start in pred:
            continue
        chain = [start]
        while chain[-1] in succ:
            chain.append(succ[chain[-1]])
        chains.append(chain)
    return chains


def seen_together(tracks: Sequence[Track]) -> np.ndarray:
    """(n, n) bool: tracks detected in one frame, hence two people (a cannot-link)."""
    n = len(tracks)
    out = np.zeros((n, n), bool)
    spans = [set(t.frames[t.observed].tolist()) for t in tracks]
    for a in range(n):
        for b in range(a + 1, n):
            if tracks[a].start < tracks[b].end and tracks[b].start < tracks[a].end and spans[a] & spans[b]:
                out[a, b] = out[b, a] = True
    return out


def descriptor_distances(tracks: Sequence[Track]) -> np.ndarray:
    """(n, n) L2 distances between track descriptors; inf where either track has none."""
    n = len(tracks)
    dist = np.full((n, n), np.inf, np.float32)
    usable = [i for i, t in enumerate(tracks) if t.embedding is not None]
    if usable:
        vecs = np.stack([tracks[i].embedding for i in usable])  # type: ignore[misc]
        dist[np.ix_(usable, usable)] = np.linalg.norm(vecs[:, None, :] - vecs[None, :, :], axis=2)
    return dist


LINKAGES = ("complete", "average")


def link_tracks(tracks: Sequence[Track], threshold: float, stitch: bool = True, linkage: str = "complete") -> list[list[int]]:
    """Group track indices into people: stitched chains first (``stitch_tracks``), then
    agglomerative clustering on descriptors, never merging tracks seen together.

    Complete linkage (the default) merges two groups only when EVERY pair of their tracks is within
    ``threshold``: average linkage chained a father and two look-alike sons into one identity
    through their closest pairs, and a --keep of that identity exposed the children. A person split
    in two costs a review click; two people merged can expose one of them.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}")
    clusters: list[list[int]] = stitch_tracks(tracks) if stitch else [[i] for i in range(len(tracks))]
    if sum(t.embedding is not None for t in tracks) < 2:
        return clusters
    dist = descriptor_distances(tracks).astype(np.float64)
    conflict = seen_together(tracks)
    k = len(clusters)
    # cluster-level matrices: complete keeps the largest distance, average the sum (and sizes)
    member = np.zeros((k, len(tracks)), np.float64)
    for c, members in enumerate(clusters):
        member[c, members] = 1.0
    with np.errstate(invalid="ignore"):
        finite = np.where(np.isfinite(dist), dist, 0.0)
        sums = member @ finite @ member.T
        infs = member @ (~np.isfinite(dist)).astype(np.float64) @ member.T
    worst = np.full((k, k), np.inf)
    usable = [c for c, members in enumerate(clusters) if all(tracks[i].embedding is not None for i in members)]
    for a, x in enumerate(usable):
        for y in usable[a + 1 :]:
            worst[x, y] = worst[y, x] = dist[np.ix_(clusters[x], clusters[y])].max()
    blocked = (member @ conflict.astype(np.float64) @ member.T) > 0
    sizes = member.sum(axis=1)
    alive = np.ones(k, bool)
    np.fill_diagonal(blocked, True)
    while True:
        if linkage == "complete":
            score = worst.copy()
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                score = np.where(infs > 0, np.inf, sums / np.outer(sizes, sizes))
        score[blocked | ~alive[:, None] | ~alive[None, :]] = np.inf
        x, y = np.unravel_index(int(np.argmin(score)), score.shape)
        if not score[x, y] < threshold:
            break
        x, y = min(x, y), max(x, y)
        clusters[x] = clusters[x] + clusters[y]
        alive[y] = False
        worst[x, :] = worst[:, x] = np.maximum(worst[x], worst[y])
        sums[x, :] = sums[:, x] = sums[x] + sums[y]
        infs[x, :] = infs[:, x] = infs[x] + infs[y]
        blocked[x, :] = blocked[:, x] = blocked[x] | blocked[y]
        blocked[x, x] = True
        sizes[x] += sizes[y]
    return [c for c, ok in zip(clusters, alive) if ok]


def build_identities(tracks: Sequence[Track], threshold: float, stitch: bool = True, linkage: str = "complete") -> list[Identity]:
    """Identities from linked tracks, numbered by first appearance, all anonymized."""
    groups = link_tracks(tracks, threshold, stitch, linkage)
    groups.sort(key=lambda g: min((tracks[i].start, tracks[i].track_id) for i in g))
    return [Identity(n, tuple(sorted(tracks[i].track_id for i in g)), "anonymize", f"person {n}") for n, g in enumerate(groups)]


def identities_from_tracks(tracks: Sequence[Track]) -> list[Identity]:
    """One anonymized identity per track (when descriptors are unavailable)."""
    return build_identities(tracks, threshold=0.0, stitch=False)
