"""Who was found: summaries, the table and the contact sheet, on the generated two-shot clip.

The sample has one face per shot and no linking across cuts yet, so each track is an identity;
hand-edited plans (``dataclasses.replace``) cover merged identities, unclaimed tracks, faces cut by
the frame edge and plans without faces.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import cv2
import numpy as np
import pytest

from deid_edit.config import DetectConfig
from deid_edit.detect import create_detector
from deid_edit.errors import ConfigError, PlanError
from deid_edit.faces import (
    ANON_COLOR,
    BEST_PER_IDENTITY,
    KEEP_COLOR,
    UNASSIGNED,
    SheetLayout,
    choose_best,
    format_table,
    summarize,
    with_thumbnails,
    write_contact_sheet,
)
from deid_edit.faces import sheet as sheet_mod
from deid_edit.timefmt import clock, timecode
from deid_edit.types import Identity, Track


@pytest.fixture(scope="module")
def plan(sample_plan):
    return sample_plan  # the session's default analysis of the sample clip (read-only)


@pytest.fixture(scope="module")
def detector():
    return create_detector(DetectConfig())


def frames_of(plan, identity):
    tracks = [t for t in plan.tracks if t.track_id in identity.track_ids]
    return set(np.concatenate([t.frames for t in tracks]).tolist()), tracks


def read_rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} is not a readable image"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def row_border(sheet_bgr, layout, row):
    """Colour of the left border of a row, at half its height."""
    return tuple(int(v) for v in sheet_bgr[layout.header + row * layout.row_height + layout.row_height // 2, layout.border // 2 + 1])


def test_summaries_match_the_plan(plan, sample_clip):
    _, truth = sample_clip
    summaries = summarize(plan)
    assert len(summaries) == len(plan.identities) == 2
    by_id = {i.identity_id: i for i in plan.identities}
    for s in summaries:
        frames, tracks = frames_of(plan, by_id[s.identity_id])
        assert s.frames == len(frames)
        assert s.screen_time == Fraction(len(frames)) / plan.video.avg_rate
        assert s.tracks == len(tracks) and s.shots == len({t.shot_index for t in tracks}) == 1
        assert s.first_frame == min(frames)
        assert s.label == by_id[s.identity_id].label and s.action == "anonymize"
        observed = {int(f) for t in tracks for f, o in zip(t.frames, t.observed) if o}
        assert 1 <= len(s.best_frames) <= BEST_PER_IDENTITY and len(set(s.best_frames)) == len(s.best_frames)
        assert set(s.best_frames) <= observed, "interpolated samples must not be shown as the face"
    first, second = summaries
    assert (first.first_frame, second.first_frame) == (0, truth.cut_frame)
    assert all(f < truth.cut_frame for f in first.best_frames) and all(f >= truth.cut_frame for f in second.best_frames)
    assert (first.first_timecode, second.first_timecode) == ("00:00:00:00", "00:00:00:20")  # 25 fps
    assert (first.first_clock, second.first_clock) == ("00:00:00.000", "00:00:00.800")
    assert second.first_time == Fraction(truth.pts[truth.cut_frame] - truth.pts[0]) * truth.time_base
    assert {s.frames for s in summaries} == {truth.cut_frame, truth.frame_count - truth.cut_frame}


def test_contact_sheet_and_thumbnails_show_the_faces(plan, sample_clip, tmp_path, detector):
    sheet_path, summaries = write_contact_sheet(sample_clip[0], plan, tmp_path / "faces")
    layout = SheetLayout(BEST_PER_IDENTITY, 112)
    sheet = cv2.imread(str(sheet_path))
    assert sheet_path == tmp_path / "faces" / "contact_sheet.png"
    assert sheet.shape == (layout.height(2), layout.width, 3)
    assert [row_border(sheet, layout, r) for r in range(2)] == [ANON_COLOR, ANON_COLOR]
    for row, s in enumerate(summaries):
        assert s.thumbnail == str(tmp_path / "faces" / f"identity_{s.identity_id}.png")
        thumb = read_rgb(s.thumbnail)
        assert thumb.shape == (224, 224, 3)
        found = detector.detect([thumb], [0], 1.0, 0.3)[0]
        assert len(found) >= 1, f"no face in {s.thumbnail}"
        x1, y1, x2, y2 = found.boxes[int(np.argmax(found.scores))]
        assert x2 - x1 > 0.4 * 224 and abs((x1 + x2) / 2 - 112) < 40, "the face fills the thumbnail's middle"
        for slot in range(len(s.best_frames)):  # every chosen frame's cell got a picture
            x, y = layout.cell_origin(row, slot)
            assert sheet[y : y + layout.thumb, x : x + layout.thumb].std() > 20
    assert format_table(summaries) == format_table(summarize(plan))  # CFR: decoded times agree with the plan
    assert [i.thumbnail for i in with_thumbnails(plan, summaries).identities] == [s.thumbnail for s in summaries]


def test_first_appearance_of_variable_frame_rate_video_uses_decoded_timestamps(vfr_clip, vfr_plan, tmp_path):
    path, truth = vfr_clip
    _, summaries = write_contact_sheet(path, vfr_plan, tmp_path, per_row=1)
    second = next(s for s in summaries if s.first_frame == truth.cut_frame)
    exact = Fraction(truth.pts[truth.cut_frame] - truth.pts[0]) * truth.time_base
    assert second.first_time == exact and second.first_clock == clock(exact)
    nominal = next(s for s in summarize(vfr_plan) if s.first_frame == truth.cut_frame)
    assert nominal.first_time == truth.cut_frame / vfr_plan.video.avg_rate  # the plan alone knows the average rate only


def test_one_decode_pass_that_stops_after_the_last_chosen_frame(plan, sample_clip, tmp_path, monkeypatch):
    readers = []

    class CountingReader(sheet_mod.VideoReader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.yielded = 0
            readers.append(self)

        def frames(self):
            for frame in super().frames():
                self.yielded += 1
                yield frame

    monkeypatch.setattr(sheet_mod, "VideoReader", CountingReader)
    _, summaries = write_contact_sheet(sample_clip[0], plan, tmp_path, per_row=2)
    assert len(readers) == 1
    assert readers[0].yielded == max(f for s in summaries for f in s.best_frames) + 1
    assert readers[0]._thread is None, "the decode thread was joined"


def test_merged_identity_counts_shots_and_is_marked_kept(plan, sample_clip, tmp_path):
    both = Identity(7, tuple(t.track_id for t in plan.tracks), "keep", "Grace Hopper & Eileen Collins")
    merged = replace(plan, identities=(both,))
    (s,) = summarize(merged)
    assert (s.identity_id, s.tracks, s.shots, s.frames, s.first_frame) == (7, 2, 2, 40, 0)
    assert s.screen_time == Fraction(8, 5)
    shots_shown = {next(sh.index for sh in plan.shots if f in sh) for f in s.best_frames}
    assert shots_shown == {0, 1}, "the row shows the person in every shot"
    sheet_path, out = write_contact_sheet(sample_clip[0], merged, tmp_path, per_row=4, thumb=64)
    layout = SheetLayout(4, 64)
    sheet = cv2.imread(str(sheet_path))
    assert sheet.shape == (layout.height(1), layout.width, 3)
    assert row_border(sheet, layout, 0) == KEEP_COLOR
    assert out[0].thumbnail == str(tmp_path / "identity_7.png")
    assert "keep" in format_table(out) and "Grace Hopper & Eileen Collins" in format_table(out)


def test_unclaimed_tracks_are_listed_not_hidden(plan):
    first = plan.identities[0]
    summaries = summarize(replace(plan, identities=(first,)))
    assert [s.identity_id for s in summaries] == [first.identity_id, UNASSIGNED]
    assert summaries[1].action == "anonymize" and summaries[1].tracks == len(plan.tracks) - 1


def test_face_cut_by_the_frame_edge_is_padded_black(plan, sample_clip, tmp_path):
    t = plan.tracks[0]
    half = (t.boxes[:, 2] - t.boxes[:, 0]) / 2
    shift = (t.boxes[:, 0] + half)[:, None]  # box centre on the left edge: half the face outside
    moved = replace(t, boxes=t.boxes - np.concatenate([shift, 0 * shift, shift, 0 * shift], axis=1))
    _, summaries = write_contact_sheet(sample_clip[0], replace(plan, tracks=(moved, *plan.tracks[1:])), tmp_path)
    assert summaries[0].first_frame == t.start
    thumb = read_rgb(summaries[0].thumbnail)
    assert thumb[:, :100].max() == 0, "outside the frame is black"
    assert thumb[:, 130:].std() > 20, "inside the frame is the picture"


def test_no_faces_sheet(plan, sample_clip, tmp_path):
    empty = replace(plan, tracks=(), identities=())
    sheet_path, summaries = write_contact_sheet(sample_clip[0], empty, tmp_path)
    layout = SheetLayout()
    sheet = cv2.imread(str(sheet_path))
    assert summaries == [] and summarize(empty) == []
    assert sheet.shape == (layout.height(0), layout.width, 3)
    message = sheet[layout.header : layout.header + layout.row_height, : layout.label_width]
    assert (message > 200).any(), "the 'no faces found' line is written"
    assert not list(tmp_path.glob("identity_*.png"))
    assert format_table([]) == "no faces found"


def test_many_identities_continue_on_further_pages(plan, sample_clip, tmp_path):
    sheet_path, summaries = write_contact_sheet(sample_clip[0], plan, tmp_path, rows_per_page=1)
    layout = SheetLayout()
    assert sheet_path.name == "contact_sheet.png" and (tmp_path / "contact_sheet_2.png").is_file()
    assert cv2.imread(str(tmp_path / "contact_sheet_2.png")).shape == (layout.height(1), layout.width, 3)


def test_table_lists_identities_with_timecodes(plan):
    table = format_table(summarize(plan))
    lines = table.splitlines()
    assert len(lines) == 2 + len(plan.identities)
    assert lines[0].split()[:3] == ["id", "label", "action"]
    assert "00:00:00:00" in lines[2] and "00:00:00:20" in lines[3] and "00:00:00.800" in lines[3]
    assert "person 0" in lines[2] and "0.80" in lines[2]


def test_timecode_and_clock():
    assert timecode(0, 25) == "00:00:00:00"
    assert timecode(25 * 3661 + 7, Fraction(25)) == "01:01:01:07"
    assert timecode(30, Fraction(30000, 1001)) == "00:00:01:00"  # NDF counts 30 a second at 29.97
    assert timecode(-1, 25) == "--:--:--:--"
    assert clock(Fraction(36615, 10)) == "01:01:01.500"
    assert clock(Fraction(1001, 30000)) == "00:00:00.033"
    assert clock(None) == "--:--:--.---"


def synthetic_track(track_id=0, shot=0, start=0):
    """Ten samples: a frontal face that grows, one larger undetected sample and one profile."""
    n = 10
    sides = np.linspace(40, 80, n)
    boxes = np.stack([100 - sides / 2, 100 - sides / 2, 100 + sides / 2, 100 + sides / 2], axis=1).astype(np.float32)
    lms = np.zeros((n, 5, 2), np.float32)
    for i, s in enumerate(sides):
        lms[i] = [[100 - s / 4, 90], [100 + s / 4, 90], [100, 100], [100 - s / 5, 112], [100 + s / 5, 112]]
    observed = np.ones(n, bool)
    observed[9] = False  # the largest is interpolated: never shown
    lms[8, 2, 0] = 100 - sides[8] / 4  # second largest: nose on an eye, a profile
    return Track(track_id, shot, np.arange(start, start + n), boxes, np.full(n, 0.9, np.float32), lms, observed, np.zeros(n, np.float32))


def test_best_frames_prefer_large_frontal_detected_faces_spread_over_tracks():
    best = choose_best([synthetic_track()], 640, 360, 3)
    assert best[0] == 7, "largest frontal observed sample first"
    assert 9 not in best and len(best) == 3
    two = choose_best([synthetic_track(), synthetic_track(1, 1, 100)], 640, 360, 2)
    assert sorted(two) == [7, 107], "one picture per shot before a second of either"


def test_other_video_and_bad_layout_are_refused(plan, sample_clip, tmp_path):
    other = replace(plan, video=replace(plan.video, fingerprint="0" * 64))
    with pytest.raises(PlanError, match="analyze"):
        write_contact_sheet(sample_clip[0], other, tmp_path)
    with pytest.raises(ConfigError, match="--thumb"):
        write_contact_sheet(sample_clip[0], plan, tmp_path, thumb=8)


def test_identity_only_seen_at_low_score_is_flagged(plan):
    """A weak track (a dim face, or a map graphic the detector half-believes) is masked and listed,
    but the editor is told it was only ever a low-score detection."""
    weak = replace(plan.tracks[1], scores=np.full(len(plan.tracks[1].frames), 0.15, np.float32))
    summaries = summarize(replace(plan, tracks=(plan.tracks[0], weak, *plan.tracks[2:])))
    by_id = {s.identity_id: s for s in summaries}
    sure, dim = by_id[plan.identities[0].identity_id], by_id[plan.identities[1].identity_id]
    assert not sure.low_confidence and sure.best_score > 0.5
    assert dim.low_confidence and dim.best_score == pytest.approx(0.15)
    lines = format_table(summaries).splitlines()
    assert "0.15 low" in lines[3] and " low" not in lines[2]
