"""The user's choice of people: --keep/--only photos or identity ids, applied per track, failing closed.

Input: a plan's tracks and identities, and a ``Selection`` (photos, ids). Output: the identities with
their actions and a ``SelectionReport`` (which tracks stay visible and why, photos that matched
nobody). Next: render. A track stays visible only when its own descriptor is reliable and close to
the chosen person, never merely because it was linked to someone kept: a face that cannot be
identified reliably (small, dark, in profile) is anonymized.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..config import DetectConfig, IdentityConfig
from ..errors import ConfigError, InputError
from ..types import Identity, Track
from .descriptors import frontality
from .link import descriptor_distances, seen_together

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """What the user asked: reference photos or identity ids to keep, or the only ones to hide."""

    keep_photos: tuple[str, ...] = ()
    only_photos: tuple[str, ...] = ()
    keep_ids: tuple[int, ...] = ()
    only_ids: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keep_photos or self.only_photos or self.keep_ids or self.only_ids)


@dataclass(frozen=True)
class TrackChoice:
    """Why one track is kept or anonymized: the selection is decided per track."""

    track_id: int
    identity_id: int  # the identity the track was linked into (before any split)
    kept: bool
    reason: str
    distance: float = float("inf")  # to the reference photo (or the kept identity's core)
    photo: int = -1  # index of the closest reference photo


@dataclass(frozen=True)
class SelectionReport:
    kept: tuple[int, ...]  # identity ids with at least one kept track
    anonymized: tuple[int, ...]
    unreliable: tuple[int, ...]  # identities anonymized because they could not be identified reliably
    choices: tuple[TrackChoice, ...] = ()
    unmatched_photos: tuple[int, ...] = ()  # --keep/--only photos no track matched
    closest: tuple[float, ...] = ()  # per photo, the closest identifiable track's distance

    def kept_tracks(self) -> tuple[int, ...]:
        return tuple(c.track_id for c in self.choices if c.kept)

    def dropped(self) -> tuple[TrackChoice, ...]:
        """Tracks of a kept identity that are anonymized anyway (they disagree with its core)."""
        kept_ids = set(self.kept)
        return tuple(c for c in self.choices if not c.kept and c.identity_id in kept_ids)


# In a reference photo, faces at least this fraction of the largest one's size count as people the
# user may mean; a second such face makes the photo ambiguous (an error, not a guess).
PHOTO_FACE_SHARE = 1 / 3
# Below these a reference photo draws a warning: small or turned faces give descriptors that sit
# near other people's (a 60-px half-hidden crop of one man on friends_coldopen_6people matched
# another man at 0.50, the keep threshold).
PHOTO_GOOD_SIDE = 80
PHOTO_GOOD_FRONTALITY = 0.35


def photo_face(spec: str) -> tuple[Path, int | None]:
    """``photo.png`` -> (path, None); ``photo.png:2`` -> (path, 2), face 2 from the left.

    A file whose own name ends in ``:N`` is taken as the file."""
    path = Path(spec)
    head, sep, tail = str(spec).rpartition(":")
    if not path.is_file() and sep and tail.isdigit() and Path(head).is_file():
        return Path(head), int(tail)
    return path, None


def reference_descriptors(
    photos: Sequence[str], embedder: object | None = None, detector: object | None = None, recognizer: str = "fast"
) -> np.ndarray:
    """One descriptor per photo, embedded by ``recognizer`` (the one that made the track
    descriptors they are compared with). A photo must show one person: several faces of similar
    size are an error unless the photo is given as ``photo.png:N`` (``photo_face``); a wrong guess
    would keep someone else visible."""
    from ..detect import create_detector
    from ..embed import FaceEmbedder, align_faces

    embedder = embedder or FaceEmbedder(recognizer=recognizer)
    detector = detector or create_detector(DetectConfig())
    out = []
    for spec in photos:
        photo, choice = photo_face(spec)
        bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{photo}: not a readable image; give a JPEG or PNG photo of the person")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        scale = min(1.0, 1600 / max(rgb.shape[:2]))
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        (det,) = detector.detect([small], [0], scale, 0.5)  # type: ignore[attr-defined]
        if not len(det) or det.landmarks is None:
            raise InputError(f"{photo}: no face found; use a clear, front-facing photo of the person")
        sides = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        faces = np.flatnonzero(sides >= PHOTO_FACE_SHARE * sides.max())  # smaller ones are far behind: not who is meant
        faces = faces[np.argsort(det.boxes[faces, 0])]  # numbered from the left
        if choice is None and len(faces) > 1:
            raise InputError(
                f"{photo}: {len(faces)} faces found; crop the photo to the one person, "
                f"or name the face as {photo}:N (1-{len(faces)}, counted from the left)"
            )
        if choice is not None and not 1 <= choice <= len(faces):
            raise InputError(f"{photo}: face {choice} asked for, but the photo has {len(faces)}; use 1-{len(faces)}, counted from the left")
        i = int(faces[(choice or 1) - 1])
        side, front = float(sides[i]), float(frontality(det.landmarks[i : i + 1], 1)[0])  # boxes are in photo pixels
        if side < PHOTO_GOOD_SIDE or front < PHOTO_GOOD_FRONTALITY:
            log.warning(
                "%s: the face is %s; a match from it is less sure (a front-facing face of %d px or more works best)",
                photo,
                f"small ({side:.0f} px)" if side < PHOTO_GOOD_SIDE else "turned away",
                PHOTO_GOOD_SIDE,
            )
        out.append(embedder.embed(align_faces(rgb, det.landmarks[i : i + 1]))[0])  # type: ignore[attr-defined]
    return np.stack(out)


def _reliable(t: Track, cfg: IdentityConfig) -> bool:
    return t.embedding is not None and t.embed_samples >= cfg.min_samples


CLASH_MARGIN = 0.05  # L2; closer calls than this between two people seen together keep neither


def _keep_tracks(
    cands: Sequence[int],
    ref_of: dict[int, int],
    dist_ref: dict[int, float],
    dist: np.ndarray,
    together: np.ndarray,
    rel: np.ndarray,
    ids: Sequence[int],
) -> dict[int, str]:
    """Which candidate tracks stay visible; the others with the reason (index -> reason or "").

    Two rules, both fail closed. (1) Two tracks seen in one frame are two people, so at most one of
    them is the person of a photo: candidates are taken closest first and one seen with an already
    kept track of the same photo is anonymized. (2) A kept track must be closer to its photo than
    to any identifiable track known to be someone else (seen in a frame with a kept track of that
    photo, or with the track itself): a son who resembles his father's photo still resembles his
    brother, who stood beside the father, more. Two tracks seen together that match a photo within
    ``CLASH_MARGIN`` of each other are both anonymized: the photo cannot tell them apart.
    """
    kept: list[int] = []
    why: dict[int, str] = {}
    for i in sorted(cands, key=lambda i: dist_ref[i]):
        clash = [k for k in kept if ref_of[k] == ref_of[i] and together[i, k]]
        if clash:
            why[i] = f"seen in the same frame as a closer match (track {ids[clash[0]]})"
            for k in clash:
                if dist_ref[i] - dist_ref[k] < CLASH_MARGIN:  # two people match the photo about as well: keep neither
                    kept.remove(k)
                    why[k] = f"seen in the same frame as an equally close match (track {ids[i]}): the photo cannot tell them apart"
        else:
            kept.append(i)
    for i in list(kept):
        others = _known_others([k for k in kept if ref_of[k] == ref_of[i]], i, together, rel)
        if others.any():
            j = int(np.flatnonzero(others)[np.argmin(dist[i, others])])
            if dist[i, j] <= dist_ref[i]:
                why[i] = f"closer to someone else (track {ids[j]}: {dist[i, j]:.2f}) than to the photo ({dist_ref[i]:.2f})"
    for i in kept:
        why.setdefault(i, "")
    return why


def _known_others(group: Sequence[int], k: int, together: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Mask of identifiable tracks known to be someone else than ``group`` + ``k``'s person if they
    are one: seen in a frame with a track of the group, or with ``k`` itself."""
    others = (together[list(group)].any(axis=0) | together[k]) & rel
    others[list(group)] = False
    return others


def _grow(
    group: list[int], cands: Sequence[int], dist: np.ndarray, together: np.ndarray, rel: np.ndarray, threshold: float
) -> list[tuple[int, float]]:
    """Grow ``group`` (in place) with the ``cands`` that agree with EVERY track in it, closest first.

    A candidate joins when its largest distance to the group is under ``threshold``, it is seen
    with no track of the group, and it is closer to the group than to anyone known to be someone
    else (``_known_others``). One joins per pass and then counts, so the next must agree with it
    too. Returns the tracks added, with that largest distance."""
    added: list[tuple[int, float]] = []
    left = [k for k in cands if k not in group]
    while left:
        best: tuple[float, int] | None = None
        for k in left:
            if together[k, group].any():
                continue
            agree = float(dist[k, group].max())
            others = _known_others(group, k, together, rel)
            if agree < threshold and (not others.any() or agree < float(dist[k, others].min())) and (best is None or agree < best[0]):
                best = (agree, k)
        if best is None:
            break
        agree, k = best
        group.append(k)
        left.remove(k)
        added.append((k, agree))
    return added


def _agreeing(
    core: dict[int, str],
    why: dict[int, str],
    ref_of: dict[int, int],
    dist_ref: dict[int, float],
    dist: np.ndarray,
    together: np.ndarray,
    rel: np.ndarray,
    cfg: IdentityConfig,
) -> dict[int, str]:
    """Tracks of the same person as a photo's core that the photo alone does not reach.

    A photo from another day, light or age sits farther from the video than the video's own
    tracks sit from each other (friends_coldopen_6people: Monica's tracks are 0.36-0.55 from her
    photo). Per photo, its core grows (``_grow``) with tracks that agree with every track of it
    within ``link_threshold`` (the bar identities use) and are still within ``only_threshold`` of
    the photo; a track already refused as seen with a closer match never joins.
    """
    added: dict[int, str] = {}
    for p in sorted({ref_of[c] for c in core}):
        group = [c for c in core if ref_of[c] == p]
        cands = [
            k
            for k in np.flatnonzero(rel).tolist()
            if ref_of.get(k) == p and dist_ref[k] < cfg.only_threshold and not why.get(k, "").startswith("seen in the same frame")
        ]
        for k, agree in _grow(group, cands, dist, together, rel, cfg.link_threshold):
            added[k] = f"agrees with the tracks that match photo {p + 1} (all within {agree:.2f}; photo {dist_ref[k]:.2f})"
            why.pop(k, None)
    return added


def select(
    identities: Sequence[Identity],
    tracks: Sequence[Track],
    sel: Selection,
    cfg: IdentityConfig,
    references: np.ndarray | None = None,
) -> tuple[list[Identity], SelectionReport]:
    """Decide per track who stays visible, failing closed; returns identities split accordingly.

    A track is never kept because its identity is: linking can be wrong, and one wrong link would
    expose a child. --keep PHOTO keeps a track only when its own descriptor (``min_samples`` good
    samples) is within ``keep_threshold`` of a photo and passes ``_keep_tracks``.
    --keep-identity N keeps the tracks of N that agree with N's core (the medoid of its
    identifiable tracks, within ``link_threshold``) and pass the same rules; N's other tracks are
    anonymized and listed. A single-track identity chosen by id is kept as the user saw it.
    --only PHOTO anonymizes a track that is within ``only_threshold`` of a photo, that cannot be
    identified, or whose identity holds such a track; --only-identity N anonymizes N's tracks and
    every track within ``only_threshold`` of one of them or not identifiable.

    Identities whose tracks end up decided differently are split: the kept tracks keep the
    identity id (action "keep"), every other track becomes its own anonymized identity, numbered
    after the last one, so plan files and renderers stay per-identity.
    """
    known_ids = {i.identity_id for i in identities}
    for n in (*sel.keep_ids, *sel.only_ids):
        if n not in known_ids:
            raise InputError(f"identity {n} is not in the plan (known: {', '.join(map(str, sorted(known_ids)))}); see 'deid-edit faces'")
    index = {t.track_id: k for k, t in enumerate(tracks)}
    ident_of = {index[t]: ident.identity_id for ident in identities for t in ident.track_ids if t in index}
    reliable = [k for k, t in enumerate(tracks) if _reliable(t, cfg)]
    rel = np.zeros(len(tracks), bool)
    rel[reliable] = True
    dist = descriptor_distances(tracks)
    together = seen_together(tracks)
    refs = references if references is not None and len(references) else None
    dist_ref: dict[int, float] = {}
    ref_of: dict[int, int] = {}
    to_photo = np.zeros((0 if refs is None else len(refs), len(reliable)))  # photo x identifiable track
    if refs is not None and reliable:
        to_photo = np.linalg.norm(refs[:, None, :] - np.stack([tracks[k].embedding for k in reliable])[None], axis=2)  # type: ignore[misc]
        for col, k in enumerate(reliable):
            ref_of[k], dist_ref[k] = int(np.argmin(to_photo[:, col])), float(np.min(to_photo[:, col]))
    keep: dict[int, str] = {}  # track index -> reason it is kept
    why: dict[int, str] = {}  # track index -> reason it is anonymized
    if sel.keep_photos and refs is not None:
        cands = [k for k in reliable if dist_ref[k] < cfg.keep_threshold]
        for k, reason in _keep_tracks(cands, ref_of, dist_ref, dist, together, rel, [t.track_id for t in tracks]).items():
            if reason:
                why[k] = reason
            else:
                keep[k] = f"matches photo {ref_of[k] + 1} ({dist_ref[k]:.2f})"
        keep.update(_agreeing(keep, why, ref_of, dist_ref, dist, together, rel, cfg))
        for k in reliable:
            if k not in keep and k not in why:
                why[k] = f"does not match a photo ({dist_ref[k]:.2f}, needs < {cfg.keep_threshold})"
    if sel.keep_ids:
        for ident in identities:
            if ident.identity_id not in sel.keep_ids:
                continue
            members = [index[t] for t in ident.track_ids if t in index]
            core = [k for k in members if k in reliable]
            if not core:
                if len(members) == 1:
                    keep[members[0]] = f"identity {ident.identity_id} chosen by id"
                else:
                    keep.update((k, f"identity {ident.identity_id} chosen by id (linked by position only)") for k in members)
                continue
            medoid = min(core, key=lambda k: (float(dist[k, core].sum()), -tracks[k].embed_samples))
            for k in core:
                ref_of[k], dist_ref[k] = -1 - ident.identity_id, float(dist[k, medoid])
            agreed = [medoid]  # only the tracks that agree with the core and each other: one person, however linked
            _grow(agreed, core, dist, together, rel, cfg.link_threshold)
            for k in members:
                if k not in reliable:
                    why[k] = "not identifiable (too small, dark or turned): cannot be checked against the identity"
                elif k in agreed:
                    keep[k] = f"agrees with identity {ident.identity_id} ({dist_ref[k]:.2f} from its core)"
                else:
                    why[k] = f"disagrees with identity {ident.identity_id}'s core ({dist_ref[k]:.2f}) or another kept track"
    if sel.only_photos or sel.only_ids:
        hide: set[int] = set()
        if refs is not None:
            hide |= {k for k in reliable if dist_ref[k] < cfg.only_threshold}
        for ident in identities:
            if ident.identity_id in sel.only_ids:
                hide |= {index[t] for t in ident.track_ids if t in index}
        chosen = [k for k in hide if k in reliable]
        for k in reliable:
            if chosen and float(dist[k, chosen].min()) < cfg.only_threshold:
                hide.add(k)
        linked = {ident_of.get(k) for k in hide}
        hide |= {k for k in range(len(tracks)) if ident_of.get(k) in linked}
        for k in range(len(tracks)):
            if k in hide:
                why[k] = "chosen to be anonymized"
            elif k not in reliable:
                why[k] = "not identifiable: anonymized (fail closed)"
            else:
                keep[k] = "not chosen"
    elif not sel:
        keep = {index[t]: "kept in the plan" for i in identities if i.action == "keep" for t in i.track_ids if t in index}
    for k in range(len(tracks)):
        if k not in keep and k not in why:
            why[k] = "not identifiable (too small, dark or turned)" if k not in reliable else "not chosen"
    choices = tuple(
        TrackChoice(
            t.track_id,
            ident_of.get(k, -1),
            k in keep,
            keep.get(k) or why.get(k, ""),
            dist_ref.get(k, float("inf")),
            max(ref_of.get(k, -1), -1),  # keep-by-id cores use negative ids here: no photo
        )
        for k, t in enumerate(tracks)
    )
    out, kept, anon = split_identities(identities, tracks, keep)
    unmatched: tuple[int, ...] = ()
    closest: tuple[float, ...] = ()
    if refs is not None:
        closest = tuple(float(row.min()) if row.size else float("inf") for row in to_photo)
        matched = {ref_of[k] for k in keep if k in ref_of and ref_of[k] >= 0}
        if sel.only_photos:
            matched = {ref_of[k] for k in reliable if dist_ref[k] < cfg.only_threshold}
        unmatched = tuple(p for p in range(len(refs)) if p not in matched)
    reliable_ids = {ident_of.get(k) for k in reliable}
    unreliable = tuple(i.identity_id for i in identities if i.identity_id not in reliable_ids) if sel.keep_photos or sel.only_photos else ()
    return out, SelectionReport(tuple(kept), tuple(anon), unreliable, choices, unmatched, closest)


def split_identities(
    identities: Sequence[Identity], tracks: Sequence[Track], keep: dict[int, str]
) -> tuple[list[Identity], list[int], list[int]]:
    """Identities with per-track decisions applied: kept tracks keep the id, others split off."""
    index = {t.track_id: k for k, t in enumerate(tracks)}
    next_id = max((i.identity_id for i in identities), default=-1) + 1
    out: list[Identity] = []
    extra: list[Identity] = []
    kept: list[int] = []
    anon: list[int] = []
    for ident in identities:
        yes = tuple(t for t in ident.track_ids if index.get(t) in keep)
        no = tuple(t for t in ident.track_ids if index.get(t) not in keep)
        if yes and no:
            out.append(replace(ident, track_ids=yes, action="keep"))
            kept.append(ident.identity_id)
            for t in no:
                label = f"{ident.label or f'person {ident.identity_id}'}, track {t} (not kept)"
                extra.append(Identity(next_id, (t,), "anonymize", label))
                anon.append(next_id)
                next_id += 1
        else:
            out.append(replace(ident, action="keep" if yes else "anonymize"))
            (kept if yes else anon).append(ident.identity_id)
    return out + extra, kept, anon


def load_selection(
    keep: Sequence[str] = (), only: Sequence[str] = (), keep_ids: Sequence[int] = (), only_ids: Sequence[int] = ()
) -> Selection:
    """Validate the CLI's choice flags (photos must exist; --keep and --only exclude each other)."""
    if (keep or keep_ids) and (only or only_ids):
        raise ConfigError("--keep/--keep-identity and --only/--only-identity cannot be combined; use one kind")
    for spec in (*keep, *only):
        if not photo_face(str(spec))[0].is_file():
            raise InputError(f"{spec}: no such photo; check the path")
    return Selection(tuple(map(str, keep)), tuple(map(str, only)), tuple(keep_ids), tuple(only_ids))
