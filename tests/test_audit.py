"""The audit: generated clips rendered by our engine (untouched, blurred, blur removed on known
frames, half size) must be flagged exactly where faces stay recognisable; frame pairing by
timestamp is tested on plain timestamps; a real-footage check runs on ../shared/footage."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import footage

from deid_edit import render
from deid_edit.audit import AuditReport, TimedFrame, audit, face_mask, faceless, pair_frames, timecode
from deid_edit.config import DetectConfig, RenderConfig
from deid_edit.detect import create_detector
from deid_edit.embed import FaceEmbedder
from deid_edit.errors import InputError
from deid_edit.plan import Plan
from deid_edit.types import Track

GAP = range(10, 15)  # frames where the blur is removed in the "gap" render


# -- fixtures: one clip, one plan, one detector and embedder for the whole module --------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def clip(sample_clip):
    """The session's generated two-shot clip (640x360, 40 frames, the cut at 20): (path, truth)."""
    return sample_clip


@pytest.fixture(scope="module")
def plan(sample_plan) -> Plan:
    """Its default analysis, shared with the session (read-only)."""
    return sample_plan


@pytest.fixture(scope="module")
def models():
    """(detector, embedder), built once: model loading dominates a short audit."""
    return create_detector(DetectConfig()), FaceEmbedder(recognizer="exact")  # the audit's own default


def run_audit(original: Path, anonymized: Path, models, **kwargs) -> AuditReport:
    detector, embedder = models
    return audit(original, anonymized, detector=detector, embedder=embedder, **kwargs)


def keep_all(plan: Plan) -> Plan:
    return replace(plan, identities=tuple(replace(i, action="keep") for i in plan.identities))


def without_frames(plan: Plan, drop: range) -> Plan:
    """The plan with every track cut out of frames ``drop``: the render leaves those faces visible.

    Tracks must be contiguous, so a track spanning the gap becomes two: the part before keeps its
    id, the part after gets a new one in the same identity.
    """
    tracks: list[Track] = []
    pieces: dict[int, list[int]] = {}
    next_id = max(t.track_id for t in plan.tracks) + 1
    for t in plan.tracks:
        for part in (t.frames < drop.start, t.frames >= drop.stop):
            if not part.any():
                continue
            if pieces.get(t.track_id):
                tid, next_id = next_id, next_id + 1
            else:
                tid = t.track_id
            pieces.setdefault(t.track_id, []).append(tid)
            tracks.append(
                replace(
                    t,
                    track_id=tid,
                    frames=t.frames[part],
                    boxes=t.boxes[part],
                    scores=t.scores[part],
                    landmarks=None if t.landmarks is None else t.landmarks[part],
                    observed=t.observed[part],
                    margin=t.margin[part] if len(t.margin) else t.margin,
                )
            )
    idents = tuple(replace(i, track_ids=tuple(p for t in i.track_ids for p in pieces.get(t, []))) for i in plan.identities)
    return replace(plan, tracks=tuple(tracks), identities=idents)


def write_half_size(src: Path, dst: Path, drop: set[int]) -> None:
    """Re-encode ``src`` at half size with its own timestamps, leaving out the frames in ``drop``."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        w, h = vin.codec_context.width // 2, vin.codec_context.height // 2
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        for i, frame in enumerate(inp.decode(vin)):
            if i in drop:
                continue
            small = cv2.resize(frame.to_ndarray(format="rgb24"), (w, h), interpolation=cv2.INTER_AREA)
            nf = av.VideoFrame.from_ndarray(small, format="rgb24")
            nf.pts, nf.time_base = frame.pts, frame.time_base
            for packet in vout.encode(nf):
                out.mux(packet)
        for packet in vout.encode(None):
            out.mux(packet)


# -- sanity: untouched and blurred ------------------------------------------------------------------
@pytest.mark.slow  # ~30 s (+ ~20 s of models and plan)
def test_untouched_reencode_is_flagged_almost_everywhere(clip, plan, models, work):
    src, truth = clip
    copy = render(src, keep_all(plan), work / "untouched.mp4")  # a re-encode that anonymizes nobody
    report = run_audit(src, copy, models)
    assert report.face_frames >= truth.frame_count - 2, "the audit's detector missed faces of the generated clip"
    assert report.faces_unrecognisable == 0, "clear frontal faces must be judged, not set aside"
    assert len(report.leaks) >= 0.95 * report.face_frames
    assert not report.ok
    assert report.frames_compared == truth.frame_count and report.frames_unmatched == 0
    assert report.longest_run >= 15, "one shot is 20 frames: the leak run should cover it"
    assert len(report.by_identity()) == 2, "two people (one per shot) should give two groups"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def update(self, stage: str, done: int, total: int) -> None:
        self.calls.append((stage, done, total))


@pytest.mark.slow  # ~21 s
def test_plan_keeps_are_not_counted_and_progress_is_reported(clip, plan, models):
    src, truth = clip
    progress = Recorder()
    report = run_audit(src, src, models, plan=keep_all(plan), progress=progress)
    assert report.face_frames == 0 and report.faces_kept >= 38
    assert report.ok and report.with_plan
    assert progress.calls[-1] == ("audit", truth.frame_count, truth.frame_count)
    for stage in ("audit-heads", "audit"):  # the head analysis first, then the comparison
        done = [c[1] for c in progress.calls if c[0] == stage]
        assert done and done == sorted(done), stage
    assert report.heads_checked == 0 and "NOTHING CHECKED" in report.summary(), "every face is kept: nothing to check"


@pytest.mark.slow  # ~26 s a mode
@pytest.mark.parametrize("mode", ["blur", "solid", "pixelate"])
def test_anonymized_render_is_flagged_nowhere(clip, plan, models, work, mode):
    src, truth = clip
    out = render(src, plan, work / f"anonymized_{mode}.mp4", RenderConfig(mode=mode))
    report = run_audit(src, out, models, plan=plan)
    assert report.face_frames >= truth.frame_count - 2 and report.faces_unrecognisable == 0
    assert report.leaks == () and report.ok
    assert report.min_distance is not None and report.min_distance >= report.threshold
    assert "OK" in report.summary()


@pytest.mark.slow  # ~15 s
def test_light_blur_that_keeps_identity_is_flagged(clip, models, work):
    """A softening blur (sigma 1.5 px over ~100 px faces) leaves the person recognisable: the
    audit must flag it in most face-frames, despite the identity-free references and the noise
    margin (which only forgive matches no better than a featureless face)."""
    src, _ = clip
    soft = work / "soft.mp4"
    with av.open(str(src)) as inp, av.open(str(soft), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.time_base = vout.codec_context.time_base = vin.time_base
        for frame in inp.decode(vin):
            nf = av.VideoFrame.from_ndarray(cv2.GaussianBlur(frame.to_ndarray(format="rgb24"), (0, 0), 1.5), format="rgb24")
            nf.pts, nf.time_base = frame.pts, frame.time_base
            for packet in vout.encode(nf):
                out.mux(packet)
        for packet in vout.encode(None):
            out.mux(packet)
    report = run_audit(src, soft, models)
    assert not report.ok and len(report.leaks) >= 0.8 * report.face_frames > 0, report.summary()


# -- blur removed on known frames -------------------------------------------------------------------
@pytest.fixture(scope="module")
def gap_report(clip, plan, models, work) -> AuditReport:
    src, _ = clip
    out = render(src, without_frames(plan, GAP), work / "gap.mp4")
    return run_audit(src, out, models, plan=plan)


@pytest.mark.slow  # ~15 s (the gap render and its audit)
def test_unblurred_frames_are_flagged_exactly(gap_report, plan):
    assert sorted(leak.frame_index for leak in gap_report.leaks) == list(GAP)
    assert gap_report.longest_run == len(GAP)
    ids = {leak.identity_id for leak in gap_report.leaks}
    assert len(ids) == 1 and ids <= {i.identity_id for i in plan.identities}, "leaks should name the plan identity"
    assert not gap_report.ok


@pytest.mark.slow  # shares the gap render and its audit (~15 s)
def test_summary_names_the_leaked_timecodes(gap_report, clip):
    _, truth = clip
    t = [Fraction(p) * truth.time_base for p in truth.pts]
    first, last = timecode(t[GAP.start] - t[0]), timecode(t[GAP.stop - 1] - t[0])
    text = gap_report.summary()
    assert f"{first}-{last} ({len(GAP)} frames)" in text, text
    assert "longest run 5 frames" in text and "NOT OK" in text


@pytest.mark.slow  # shares the gap render and its audit (~10 s)
def test_json_round_trips(gap_report):
    data = json.loads(json.dumps(gap_report.to_json()))
    assert data["schema"] == "deid_edit.Audit.1"
    assert data["ok"] is False and data["leak_count"] == len(GAP) and data["longest_run"] == len(GAP)
    assert [leak["frame"] for leak in data["leaks"]] == list(GAP)
    (group,) = data["identities"]
    assert group["ranges"] == [
        {"start_frame": GAP.start, "end_frame": GAP.stop - 1, "start": data["leaks"][0]["timecode"], "end": data["leaks"][-1]["timecode"]}
    ]
    assert all(Fraction(leak["time"]) >= 0 for leak in data["leaks"])


# -- resolution change and timestamp pairing --------------------------------------------------------
@pytest.mark.slow  # ~13 s
def test_half_size_copy_with_a_dropped_frame_is_paired_by_time(clip, models, work):
    src, truth = clip
    half = work / "half.mp4"
    write_half_size(src, half, drop={7})
    report = run_audit(src, half, models)
    assert report.frames_unmatched == 1 and report.frames_compared == truth.frame_count - 1
    assert report.faces_unchecked == 1, "the face of the dropped frame could not be checked"
    assert len(report.leaks) >= 0.95 * report.face_frames, report.summary()
    assert 7 not in {leak.frame_index for leak in report.leaks}
    assert report.match == "time" and report.time_offset == 0


def frames_at(times: list[Fraction], start_index: int = 0) -> list[TimedFrame]:
    return [TimedFrame(start_index + i, t, np.zeros((1, 1, 3), np.uint8)) for i, t in enumerate(times)]


def test_pairing_by_nearest_time_within_half_a_frame():
    tb = Fraction(1, 25)
    orig = frames_at([i * tb for i in range(6)])
    # anonymized: frame 2 missing, a duplicate near frame 4, slightly jittered timestamps
    anon = frames_at([Fraction(0), tb + Fraction(1, 1000), 3 * tb, 4 * tb - Fraction(1, 200), 4 * tb, 5 * tb])
    pairs = [(o.index, a.index if a else None) for o, a, _ in pair_frames(orig, anon, tb / 2)]
    assert pairs == [(0, 0), (1, 1), (2, None), (3, 2), (4, 4), (5, 5)]


def test_pairing_follows_a_restarted_clock_or_the_index():
    tb = Fraction(1, 30)
    orig = [i * tb + Fraction(17, 20) for i in range(4)]  # starts at 0.85 s, like some phone files
    anon = [i * tb for i in range(4)]
    auto = list(pair_frames(frames_at(orig), frames_at(anon), tb / 2, "auto"))
    assert [a.index for _, a, _ in auto] == [0, 1, 2, 3] and auto[0][2] == Fraction(-17, 20)
    strict = list(pair_frames(frames_at(orig), frames_at(anon), tb / 2, "time"))
    assert all(a is None for _, a, _ in strict)
    retimed = [Fraction(i, 22) for i in range(3)]  # constant-rate re-time: only the order survives
    by_index = list(pair_frames(frames_at(orig), frames_at(retimed), tb / 2, "index"))
    assert [a.index if a else None for _, a, _ in by_index] == [0, 1, 2, None]


def test_faceless_chip_erases_the_face_box_and_keeps_the_context():
    chip = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    # image -> chip: scale 2, shift (10, 20); the box (20..60, 10..60) lands on (50..130, 40..140)
    mask = face_mask(np.array([[2.0, 0, 10], [0, 2.0, 20]]), np.array([20, 10, 60, 60]))
    assert mask[90, 90] and mask[90, 52] and mask[42, 90] and not mask[42, 52] and not mask[10, 10]
    out = faceless(chip, mask)
    assert np.array_equal(out[~mask], chip[~mask])
    assert len(np.unique(out[mask], axis=0)) == 1


def test_timecode_format():
    assert timecode(Fraction(0)) == "00:00:00.000"
    assert timecode(Fraction(3723, 1) + Fraction(1, 8)) == "01:02:03.125"


def test_missing_input_raises_input_error(clip, models, tmp_path):
    with pytest.raises(InputError):
        run_audit(clip[0], tmp_path / "nope.mp4", models)


# -- heads the copy leaves uncovered, and files that do not belong together ---------------------------
@pytest.mark.slow  # ~14 s (+ the gap render)
def test_uncovered_heads_are_listed_with_a_sheet(gap_report, clip, plan, models, work):
    """The gap render leaves the face visible in frames 10-14: the pixel check lists exactly those
    heads (no recognizer needed), fails the audit and draws them for a person to check."""
    uncovered = sorted({h.frame_index for h in gap_report.heads_uncovered})
    assert uncovered == list(GAP), uncovered
    assert gap_report.heads_checked >= 30 and not gap_report.ok
    src, _ = clip
    out = work / "gap.mp4"
    report = run_audit(src, out, models, plan=plan, sheet=work / "gap.audit.png")
    sheet = cv2.imread(str(work / "gap.audit.png"))
    assert report.sheet and sheet is not None and sheet.shape[0] >= 160, "one row of original/copy tiles at least"
    assert "uncovered heads: 5 head-frames" in report.summary()


@pytest.mark.slow  # ~16 s
def test_a_well_anonymized_copy_leaves_no_head_uncovered(clip, plan, models, work):
    src, _ = clip
    out = render(src, plan, work / "heads_blur.mp4", RenderConfig(mode="blur"))
    report = run_audit(src, out, models, plan=plan, sheet=work / "none.png")
    assert report.heads_checked >= 30 and report.heads_uncovered == () and report.ok
    assert report.sheet is None and not (work / "none.png").exists(), "no sheet when there is nothing to look at"


@pytest.mark.slow  # ~4 s: makes another clip
def test_refuses_another_video(clip, models, work):
    from deid_edit.sample import make_sample_clip

    other = work / "other.mp4"
    make_sample_clip(other, width=640, height=360, frames=40, cut_frame=20, seed=7)
    with pytest.raises(InputError, match="not an anonymized copy"):
        run_audit(clip[0], other, models, heads=False)


@pytest.mark.slow  # ~4 s: a render and the audit's models
def test_refuses_swapped_arguments(clip, plan, models, work):
    src, _ = clip
    out = render(src, plan, work / "swap_solid.mp4", RenderConfig(mode="solid"))
    with pytest.raises(InputError, match="swapped"):
        run_audit(out, src, models, heads=False)


@pytest.mark.slow  # ~4 s: makes two more clips
def test_refuses_another_length_or_shape(clip, models, work):
    from deid_edit.sample import make_sample_clip

    short = work / "short.mp4"
    make_sample_clip(short, width=640, height=360, frames=100, cut_frame=20)
    with pytest.raises(InputError, match="not the same video"):
        run_audit(clip[0], short, models, heads=False)
    square = work / "square.mp4"
    make_sample_clip(square, width=360, height=360, frames=40, cut_frame=20)
    with pytest.raises(InputError, match="cannot be an anonymized copy"):
        run_audit(clip[0], square, models, heads=False)


def test_nothing_checked_is_not_ok_in_words(models, work):
    """A clip without faces: no face compared, no head checked; the summary says so instead of OK."""
    src = work / "empty.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(20):
            img = (rng.random((240, 320, 3)) * 60 + 80).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    report = run_audit(src, src, models)
    assert report.nothing_checked and report.ok
    assert "NOTHING CHECKED" in report.summary() and "OK: no" not in report.summary()


# -- real footage ------------------------------------------------------------------------------------
@pytest.mark.slow  # ~150 s
@pytest.mark.media
def test_our_blur_on_hamilton_stage(tmp_path, models, footage_plan):
    """Our default blur on a dark stage clip with an audience: no leak.

    Measured (CenterFace + exact dlib ResNet, CPU): 941 faces >= 24 px, 561 of them unrecognisable
    (a blank or featureless face already matches them), 379 compared; an untouched re-encode leaks
    379 of 379, our blur none: 23 face-frames come under 0.6 (0.569..0.600) on three dim, turned
    faces in frames 211-274, but their mean-colour fills and featureless blurs are as close
    (0.61..0.66): borderline, within the recogniser's frame-to-frame noise, not leaks.
    """
    src = footage("hamilton_stage.mp4")  # skips without the footage
    plan = footage_plan("hamilton_stage.mp4")  # the session's default analysis of it
    out = render(src, plan, tmp_path / "hamilton.blur.mp4")
    report = run_audit(src, out, models, plan=plan)
    print(report.summary())
    assert report.face_frames > 100 and report.frames_unmatched == 0 and report.faces_unchecked == 0
    assert report.ok and report.leaks == (), report.summary()
    assert report.faces_borderline < 0.1 * report.face_frames, report.summary()
    untouched = run_audit(src, src, models, plan=plan)
    assert len(untouched.leaks) == untouched.face_frames == report.face_frames
