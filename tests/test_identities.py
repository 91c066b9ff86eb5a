"""Identities: linking tracks across cuts (cannot-link), choosing people with fail-closed rules,
reference photos, and the real-footage choices (keep one of two men; keep Lin-Manuel Miranda)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import SHARED, footage

from deid_edit import analyze, render
from deid_edit.config import IdentityConfig, RenderConfig
from deid_edit.errors import ConfigError, InputError
from deid_edit.identities import Selection, build_identities, link_tracks, load_selection, reference_descriptors, select
from deid_edit.types import Identity, Track


def track(tid: int, start: int, end: int, emb: np.ndarray | None, samples: int = 4) -> Track:
    n = end - start
    return Track(tid, 0, np.arange(start, end), np.zeros((n, 4), np.float32), np.ones(n, np.float32), None,
                 np.ones(n, bool), np.zeros(n, np.float32), emb, samples if emb is not None else 0)  # fmt: skip


def person(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, 128).astype(np.float32)


def jitter(v: np.ndarray, seed: int) -> np.ndarray:
    return (v + np.random.default_rng(seed).normal(0, 0.01, 128)).astype(np.float32)


def test_linking_across_cuts_with_cannot_link():
    a, b = person(1), person(2)
    tracks = [
        track(0, 0, 20, jitter(a, 10)),
        track(1, 0, 20, jitter(b, 11)),  # seen with track 0: never the same person
        track(2, 30, 50, jitter(a, 12)),  # a returns after a cut
        track(3, 60, 80, jitter(b, 13)),
        track(4, 60, 80, None),  # too small to identify: stays alone
    ]
    groups = sorted(sorted(g) for g in link_tracks(tracks, 0.55))
    assert groups == [[0, 2], [1, 3], [4]]
    ids = build_identities(tracks, 0.55)
    assert [i.track_ids for i in ids] == [(0, 2), (1, 3), (4,)]  # numbered by first appearance
    # the same face twice in one frame is two people, however close the descriptors
    twins = [track(0, 0, 10, jitter(a, 1)), track(1, 5, 15, jitter(a, 2))]
    assert len(link_tracks(twins, 0.55)) == 2


def test_selection_fails_closed():
    a, b = person(1), person(2)
    tracks = [track(0, 0, 10, jitter(a, 3)), track(1, 0, 10, jitter(b, 4)), track(2, 0, 10, None)]
    idents = [Identity(i, (i,)) for i in range(3)]
    cfg = IdentityConfig()
    kept, rep = select(idents, tracks, Selection(keep_photos=("a.png",)), cfg, np.stack([a]))
    assert [i.action for i in kept] == ["keep", "anonymize", "anonymize"]
    assert rep.unreliable == (2,)
    only, rep = select(idents, tracks, Selection(only_photos=("b.png",)), cfg, np.stack([b]))
    assert [i.action for i in only] == ["keep", "anonymize", "anonymize"]  # unidentifiable face: hidden too
    ids, _ = select(idents, tracks, Selection(keep_ids=(1,)), cfg)
    assert [i.action for i in ids] == ["anonymize", "keep", "anonymize"]
    with pytest.raises(InputError, match="identity 9"):
        select(idents, tracks, Selection(only_ids=(9,)), cfg)
    # near the threshold is not close enough to keep
    near = a + (0.52 / np.linalg.norm(b - a)) * (b - a)
    kept, _ = select(idents[:1], tracks[:1], Selection(keep_photos=("a.png",)), cfg, np.stack([near]))
    assert kept[0].action == "anonymize"


def test_load_selection_errors(tmp_path):
    with pytest.raises(InputError, match="nobody.png"):
        load_selection(keep=[str(tmp_path / "nobody.png")])
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_selection(keep_ids=[1], only_ids=[2])


def test_reference_photo_without_a_face(tmp_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 127, np.uint8))
    with pytest.raises(InputError, match="no face found"):
        reference_descriptors([str(blank)])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        reference_descriptors([str(text)])


def _masked_fraction(frame_rgb: np.ndarray, box: np.ndarray) -> float:
    x1, y1, x2, y2 = np.round(box).astype(int)
    cx, cy, hw, hh = (x1 + x2) // 2, (y1 + y2) // 2, max((x2 - x1) // 4, 2), max((y2 - y1) // 4, 2)
    core = frame_rgb[cy - hh : cy + hh, cx - hw : cx + hw].astype(int)
    return float(((core[..., 0] > 200) & (core[..., 1] < 60) & (core[..., 2] > 200)).mean())


@pytest.mark.media
def test_keep_one_of_two_men(tmp_path):
    """studio_interview_2people: keep the man in a reference photo cut from another part of the clip."""
    src = footage("studio_interview_2people.mp4")
    plan = analyze(src)
    assert len(plan.identities) == 2
    kept_track = min(plan.tracks, key=lambda t: t.boxes[0][0])  # the man on the left
    other = next(t for t in plan.tracks if t is not kept_track)
    f = kept_track.start + 250 if kept_track.end > kept_track.start + 250 else kept_track.end - 1
    with av.open(str(src)) as c:
        frame = next(fr for i, fr in enumerate(c.decode(video=0)) if i == f).to_ndarray(format="rgb24")
    x1, y1, x2, y2 = kept_track.boxes[f - kept_track.start]
    w, h = x2 - x1, y2 - y1
    crop = frame[max(0, int(y1 - h * 0.6)) : int(y2 + h * 0.6), max(0, int(x1 - w * 0.6)) : int(x2 + w * 0.6)]
    photo = tmp_path / "reference.png"
    cv2.imwrite(str(photo), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    out = render(
        src, plan, tmp_path / "out.mp4", RenderConfig(mode="solid", color=(255, 0, 255)), selection=Selection(keep_photos=(str(photo),))
    )
    with av.open(str(out)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            img = fr.to_ndarray(format="rgb24")
            if kept_track.start <= i < kept_track.end:
                assert _masked_fraction(img, kept_track.boxes[i - kept_track.start]) == 0.0, f"kept man masked in frame {i}"
            if other.start <= i < other.end:
                assert _masked_fraction(img, other.boxes[i - other.start]) > 0.95, f"other man visible in frame {i}"


@pytest.mark.media
def test_keep_lin_manuel_miranda_on_hamilton():
    src = footage("hamilton_stage.mp4")
    photo = SHARED / "faces" / "people" / "lin-manuel-miranda.png"
    plan = analyze(src)
    refs = reference_descriptors([str(photo)])
    idents, report = select(plan.identities, plan.tracks, Selection(keep_photos=(str(photo),)), IdentityConfig(), refs)
    assert len(report.kept) == 1, report
    kept_plan = replace(plan, identities=tuple(idents))
    kept = next(i for i in idents if i.action == "keep")
    kept_tracks = {t for t in kept.track_ids}
    for f in range(plan.frame_count):
        for r in kept_plan.regions_at(f):
            assert r.track_id not in kept_tracks
    assert sum(len(kept_plan.regions_at(f)) for f in range(plan.frame_count)) > 0.7 * plan.face_frames()


@pytest.mark.media
def test_linking_on_interleaved_real_shots(tmp_path):
    """Five people from the real footage, twelve shots, people returning: tracks -> identities."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from identities import PEOPLE, build_multishot, scores

    for name in PEOPLE:
        footage(name)
    clip = tmp_path / "multishot.mp4"
    shots = build_multishot(clip)
    r = scores(analyze(clip), shots)
    assert r["people"] == 5
    for key in ("pair_precision", "pair_recall", "bcubed_precision", "bcubed_recall"):
        assert r[key] >= 0.95, r
