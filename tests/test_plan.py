"""The plan file: schema, round trip, refusal of foreign or unknown plans, golden plans of both
versions (Plan.1 read through the upgrader, Plan.2 as written today)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from deid_edit import load_plan, save_plan
from deid_edit.errors import PlanError
from deid_edit.io.decode import probe
from deid_edit.plan import PLAN_1, SCHEMA, upgrade

GOLDEN = Path(__file__).parent / "golden" / "sample_plan.json"  # Plan.2, written by this version
GOLDEN_V1 = Path(__file__).parent / "golden" / "sample_plan_v1.json"  # Plan.1, written before the upgrade


@pytest.fixture(scope="module")
def plan(sample_plan):
    return sample_plan  # the session's default analysis of the sample clip (read-only)


def test_round_trip(plan, tmp_path):
    p = save_plan(plan, tmp_path / "a.deid.json")
    data = json.loads(p.read_text())
    assert data["schema"] == SCHEMA
    back = load_plan(p)
    assert back.video == plan.video
    assert back.shots == plan.shots
    assert len(back.detections) == plan.frame_count
    for a, b in zip(back.tracks, plan.tracks):
        assert np.array_equal(a.frames, b.frames)
        assert np.allclose(a.boxes, b.boxes, atol=0.01)
        assert np.array_equal(a.observed, b.observed)
    for f in range(plan.frame_count):
        assert len(back.regions_at(f)) == len(plan.regions_at(f))


def test_unknown_schema_is_refused(plan, tmp_path):
    data = plan.to_json()
    data["schema"] = "deid_edit.Plan.9"
    p = tmp_path / "future.deid.json"
    p.write_text(json.dumps(data))
    with pytest.raises(PlanError, match="upgrade"):
        load_plan(p)
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(PlanError, match="not a deid-edit plan"):
        load_plan(p)
    p.write_text("{broken")
    with pytest.raises(PlanError, match="future.deid.json"):
        load_plan(p)


def test_plan_for_another_file_is_refused(plan, vfr_clip):
    with pytest.raises(PlanError, match="analyze"):
        plan.check_video(probe(vfr_clip[0]))
    plan.check_video(probe(plan.video.path))


def test_render_refuses_foreign_plan(plan, vfr_clip, tmp_path):
    from deid_edit import render

    out = tmp_path / "x.mp4"
    with pytest.raises(PlanError):
        render(vfr_clip[0], plan, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_kept_identity_is_not_rendered(plan):
    f = int(plan.tracks[0].frames[0])
    assert plan.regions_at(f)
    kept = replace(plan, identities=tuple(replace(i, action="keep") for i in plan.identities))
    assert kept.regions_at(f) == []
    assert kept.regions_at(f, include_kept=True)


@pytest.mark.parametrize("golden_file", [GOLDEN, GOLDEN_V1], ids=["Plan.2", "Plan.1"])
def test_golden_plan(plan, sample_clip, golden_file):
    """The analysis of the generated clip matches the checked-in golden plans (within 3 px)."""
    golden = load_plan(golden_file)
    truth = sample_clip[1]
    assert (
        [(s.start, s.end) for s in plan.shots]
        == [(s.start, s.end) for s in golden.shots]
        == [(0, truth.cut_frame), (truth.cut_frame, truth.frame_count)]
    )
    assert len(plan.tracks) == len(golden.tracks)
    for a, b in zip(plan.tracks, golden.tracks):
        assert np.array_equal(a.frames, b.frames)
        assert np.abs(a.boxes - b.boxes).max() < 3.0
    for a, b in zip(plan.detections, golden.detections):
        assert len(a) == len(b)


def test_plan_1_is_upgraded_with_what_made_it(tmp_path):
    """A Plan.1 file loads with the values deid-edit used before the fields existed (exact
    recognizer, average linkage) and is written back as Plan.2; the upgrade does not touch its input."""
    data = json.loads(GOLDEN_V1.read_text())
    assert data["schema"] == PLAN_1 and "recognizer" not in data["config"]["identity"]
    before = json.dumps(data)
    up = upgrade(data)
    assert json.dumps(data) == before
    assert up["schema"] == SCHEMA
    assert up["config"]["identity"]["recognizer"] == "exact" and up["config"]["identity"]["linkage"] == "average"
    assert up["config"]["metadata_removed"] is None
    plan = load_plan(GOLDEN_V1)
    assert plan.recognizer == "exact" and plan.link_threshold == 0.55
    again = load_plan(save_plan(plan, tmp_path / "v2.deid.json"))
    assert json.loads((tmp_path / "v2.deid.json").read_text())["schema"] == SCHEMA
    assert again.config == plan.config and again.identities == plan.identities


def test_plan_2_with_a_field_missing_is_damaged(tmp_path):
    """Plan.2 has every field: a reader never guesses a default for one that is missing."""
    data = json.loads(GOLDEN.read_text())
    assert data["schema"] == SCHEMA
    for drop in (("tracks", 0, "margin"), ("identities", 0, "label"), ("config", "identity", "recognizer"), ("config", "metadata_removed")):
        broken = json.loads(GOLDEN.read_text())
        node = broken
        for key in drop[:-1]:
            node = node[key]
        del node[drop[-1]]
        p = tmp_path / "broken.deid.json"
        p.write_text(json.dumps(broken))
        with pytest.raises(PlanError, match="damaged plan"):
            load_plan(p)


def test_regions_grow_up_and_past_frame_edges(plan):
    """The region reaches above the tracked box, and past a frame edge the face is cut by."""
    from deid_edit.plan import EDGE_EXTEND, MIN_ASPECT, TOP_EXTRA

    w, h = plan.video.width, plan.video.height
    inner = plan._region_box(np.array([100, 100, 200, 250], np.float32))
    assert inner.tolist() == pytest.approx([100, 100 - 150 * TOP_EXTRA, 200, 250])
    # a foreshortened box (a face looking down: brows to chin squashed) reaches up to the crown
    down = plan._region_box(np.array([100, 100, 200, 210], np.float32))
    assert down.tolist() == pytest.approx([100, 100 - 110 * TOP_EXTRA - (100 * MIN_ASPECT - 110), 200, 210])
    edge = plan._region_box(np.array([w - 80, 50, w, 150], np.float32))
    assert edge[2] == pytest.approx(w + 80 * EDGE_EXTEND) and edge[0] == w - 80
    corner = plan._region_box(np.array([0, h - 60, 50, h], np.float32))
    assert corner[0] < 0 and corner[3] > h


def test_regions_grow_towards_the_back_of_a_turned_head(plan):
    """A profile's box hugs nose to ear; the region grows on the side away from the nose and down
    (jaw, neck), in full past a turn of 1.0 and not at all for a frontal face or bad landmarks."""
    from deid_edit.plan import PROFILE_BACK, PROFILE_DOWN, TOP_EXTRA, profile_turn

    box = np.array([100, 100, 200, 250], np.float32)
    top = 100 - 150 * TOP_EXTRA

    def lms(nose_x: float) -> np.ndarray:  # eyes at x 130/170, y 150; mouth at y 220
        return np.array([[130, 150], [170, 150], [nose_x, 185], [135, 220], [165, 220]], np.float32)

    assert profile_turn(lms(150)) == pytest.approx(0.0)
    assert plan._region_box(box, lms(150)).tolist() == pytest.approx([100, top, 200, 250])  # frontal
    assert plan._region_box(box, lms(168)).tolist() == pytest.approx([100, top, 200, 250])  # nose at an eye
    left = plan._region_box(box, lms(100))  # nose far left of the eyes: looks left, back of head right
    assert profile_turn(lms(100)) < -1
    assert left.tolist() == pytest.approx([100, top, 200 + PROFILE_BACK * 100, 250 + PROFILE_DOWN * 150])
    right = plan._region_box(box, lms(200))
    assert right.tolist() == pytest.approx([100 - PROFILE_BACK * 100, top, 200, 250 + PROFILE_DOWN * 150])
    half = plan._region_box(box, lms(180))  # turn 0.75: half-way up the ramp
    assert half[0] == pytest.approx(100 - 0.5 * PROFILE_BACK * 100)
    upside_down = lms(100)
    upside_down[:, 1] = 400 - upside_down[:, 1]
    assert plan._region_box(box, upside_down).tolist() == pytest.approx([100, top, 200, 250])


def test_detection_log_reads_back_every_frame_exactly(plan):
    """The analysis keeps detections in a compact log; it must give back the same bits, frame for
    frame, as the FrameDetections that went in, and cost far less than a list of them."""
    from deid_edit.types import DetectionLog, FrameDetections

    rng = np.random.default_rng(3)
    dets = []
    for i in range(500):
        k = int(rng.integers(0, 4))
        lm = None if i % 7 == 3 else rng.random((k, 5, 2), np.float32) * 1000
        dets.append(FrameDetections(i, rng.random((k, 4), np.float32) * 1000, rng.random(k, np.float32), lm))
    log = DetectionLog(dets[:200])
    log.extend(dets[200:])
    assert len(log) == 500
    for a, b in zip(dets, log):
        assert a.frame_index == b.frame_index and len(a) == len(b)
        assert a.boxes.tobytes() == b.boxes.tobytes() and a.scores.tobytes() == b.scores.tobytes()
        assert (a.landmarks is None) == (b.landmarks is None)
        if a.landmarks is not None:
            assert a.landmarks.tobytes() == b.landmarks.tobytes()
    assert log[-1].frame_index == 499 and [d.frame_index for d in log[-3:]] == [497, 498, 499]
    with pytest.raises(IndexError):
        log[500]
    faces = sum(len(d) for d in dets)
    assert log.nbytes <= 2 * (500 * 17 + faces * 60) + 64 * 77  # room for growth at most doubles it
    # the analysis' own log: the sample plan's detections read like the tuple a loaded plan holds
    assert isinstance(plan.detections, DetectionLog)
    assert [d.frame_index for d in plan.detections] == list(range(plan.frame_count))
