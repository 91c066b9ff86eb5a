"""Shot cuts: detection on the generated clip, and editors' cut lists (CSV, EDL, OTIO)."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from deid_edit import analyze
from deid_edit.config import AnalyzeConfig
from deid_edit.errors import InputError
from deid_edit.shots import load_cut_list, shots_from_cuts

FPS = Fraction(25)


def bounds(shots):
    return [(s.start, s.end) for s in shots]


def test_detected_cut_matches_ground_truth(sample_clip, sample_plan):
    _, truth = sample_clip
    assert bounds(sample_plan.shots) == [(0, truth.cut_frame), (truth.cut_frame, truth.frame_count)]


def test_shots_from_cuts_drops_duplicates_and_out_of_range():
    assert bounds(shots_from_cuts([10, 10, 0, 99, 30], 40)) == [(0, 10), (10, 30), (30, 40)]


def test_csv_cut_list(tmp_path):
    f = tmp_path / "cuts.csv"
    f.write_text("cut,comment\n10,first\n00:00:02:00,timecode\n3.2s,seconds\n00:00:04.000,ms\n")
    assert bounds(load_cut_list(f, FPS, 200)) == [(0, 10), (10, 50), (50, 80), (80, 100), (100, 200)]


def test_edl_cut_list(tmp_path):
    f = tmp_path / "cuts.edl"
    f.write_text(
        "TITLE: interview\nFCM: NON-DROP FRAME\n\n"
        "001  AX       V     C        00:00:10:00 00:00:12:00 01:00:00:00 01:00:02:00\n"
        "002  AX       V     C        00:05:00:00 00:05:01:12 01:00:02:00 01:00:03:12\n"
        "003  AX       V     C        00:07:00:00 00:07:02:00 01:00:03:12 01:00:05:12\n"
    )
    assert bounds(load_cut_list(f, FPS, 137)) == [(0, 50), (50, 87), (87, 137)]


def test_otio_cut_list(tmp_path):
    def clip(frames):
        return {"OTIO_SCHEMA": "Clip.2", "source_range": {"duration": {"value": frames, "rate": 25.0}}}

    timeline = {"OTIO_SCHEMA": "Timeline.1", "tracks": {"children": [{"kind": "Video", "children": [clip(30), clip(45), clip(25)]}]}}
    f = tmp_path / "cuts.otio"
    f.write_text(json.dumps(timeline))
    assert bounds(load_cut_list(f, FPS, 100)) == [(0, 30), (30, 75), (75, 100)]


def test_bad_cut_list_is_a_clear_error(tmp_path):
    f = tmp_path / "cuts.csv"
    f.write_text("cut\n12\nbanana\n")
    with pytest.raises(InputError, match="cuts.csv"):
        load_cut_list(f, FPS, 100)
    with pytest.raises(InputError, match="missing.edl"):
        load_cut_list(tmp_path / "missing.edl", FPS, 100)


def test_cut_list_replaces_detection(sample_clip, tmp_path):
    path, truth = sample_clip
    f = tmp_path / "cuts.csv"
    f.write_text("5\n33\n")
    plan = analyze(path, AnalyzeConfig.from_options(cut_list=str(f)))
    assert bounds(plan.shots) == [(0, 5), (5, 33), (33, truth.frame_count)]
    assert all(any(s.start <= t.start and t.end <= s.end for s in plan.shots) for t in plan.tracks), "a track crossed a cut"


def test_fade_through_black_is_a_cut():
    """A slow fade out and in (no hard cut for the content detector) still splits the shots."""
    import numpy as np

    from deid_edit.config import ShotConfig
    from deid_edit.shots import ShotDetector

    det = ShotDetector(ShotConfig(), FPS)
    rng = np.random.default_rng(0)
    a = rng.integers(60, 200, (90, 160, 3), dtype=np.uint8)
    b = rng.integers(60, 200, (90, 160, 3), dtype=np.uint8)
    levels = [1.0] * 20 + list(np.linspace(1, 0, 10)) + [0.0] * 5 + list(np.linspace(0, 1, 10)) + [1.0] * 20
    for i, level in enumerate(levels):
        img = a if i < 35 else b
        det.push(i, (img * level).astype(np.uint8))
    shots = det.finish(len(levels))
    assert len(shots) == 2, bounds(shots)
    assert 25 <= shots[1].start <= 40
