"""Streaming run (one decode, a bounded window): the same protection as the two-pass path.

With a window at least as long as every shot the regions are the two-pass plan's (boxes within
1 px) and so are the pixels written; with a short window, frames are rendered ahead of their cut and
every face the two-pass plan covers is still covered."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import ROOT, footage

from deid_edit.config import DetectConfig, RenderConfig
from deid_edit.identities import Selection
from deid_edit.pipeline import render, run
from deid_edit.pipeline.selection import selection_references
from deid_edit.pipeline.stream import FRAME_OVERHEAD, WINDOW_BYTES, RenderedRegions, beside_encoder, run_streaming, window_frames
from deid_edit.plan import Plan

sys.path.insert(0, str(ROOT / "benchmarks"))


def region_differences(a: Plan, b: Plan | RenderedRegions, frames: int) -> tuple[list[int], float]:
    """Frames whose anonymized regions differ in number, and the largest box difference elsewhere."""
    differ, worst = [], 0.0
    for f in range(frames):
        ra = sorted(tuple(r.box.tolist()) for r in a.regions_at(f))
        rb = sorted(tuple(r.box.tolist()) for r in b.regions_at(f))
        if len(ra) != len(rb):
            differ.append(f)
        elif ra:
            worst = max(worst, float(np.abs(np.array(ra) - np.array(rb)).max()))
    return differ, worst


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(c.streams.video[0])]


def test_stream_matches_two_pass_on_the_sample(sample_clip, sample_plan, tmp_path):
    """A window longer than the clip: same shots, tracks and regions as analyze; the same pixels as
    analyze + render; one frame written per frame decoded."""
    clip, truth = sample_clip
    record = RenderedRegions()
    out, plan = run_streaming(clip, tmp_path / "stream.mp4", lookahead=60, record=record)
    assert [(s.start, s.end) for s in plan.shots] == [(s.start, s.end) for s in sample_plan.shots]
    assert [t.track_id for t in plan.tracks] == [t.track_id for t in sample_plan.tracks]
    assert len(plan.identities) == len(sample_plan.identities) == 2
    differ, worst = region_differences(sample_plan, record, truth.frame_count)
    assert differ == [] and worst <= 1.0
    assert record.frame_count == truth.frame_count
    two_pass = render(clip, sample_plan, tmp_path / "two_pass.mp4")
    a, b = frames_of(out), frames_of(two_pass)
    assert len(a) == len(b) == truth.frame_count
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "the streamed pixels are the two-pass render's"


def test_window_size_is_bounded_by_memory():
    """A small clip's window holds the seconds asked; 1080p and 4K windows are cut to the byte budget."""
    from deid_edit.types import VideoInfo

    def info(w: int, h: int, rate: int, pix: str = "yuv420p") -> VideoInfo:
        return VideoInfo("x.mp4", w, h, w, h, 0, 0, rate * 10, rate, 10, "h264", pix, 0, "", 0)  # type: ignore[arg-type]

    assert window_frames(info(640, 360, 30), 5.0) == 150
    hd = window_frames(info(1920, 1080, 30), 5.0)
    assert 60 <= hd < 150 and hd * 1920 * 1080 * 1.5 * FRAME_OVERHEAD <= WINDOW_BYTES
    four_k = window_frames(info(3840, 2160, 60), 5.0)
    assert 8 <= four_k < hd and four_k * 3840 * 2160 * 1.5 * FRAME_OVERHEAD <= WINDOW_BYTES


@pytest.mark.media
@pytest.mark.slow
@pytest.mark.parametrize("clip", ["hamilton_stage.mp4", "film_dark_vfr_3shots.mp4"])
def test_stream_matches_two_pass_on_footage(clip, footage_plan, tmp_path):
    """Real multi-shot footage (a stage with 4 shots; a dark VFR film with 3), window longer than
    every shot: the regions rendered are the two-pass plan's, frame by frame."""
    two_pass = footage_plan(clip)
    record = RenderedRegions()
    _, plan = run_streaming(footage(clip), tmp_path / "o.mp4", lookahead=60, record=record)
    assert [(s.start, s.end) for s in plan.shots] == [(s.start, s.end) for s in two_pass.shots]
    assert len(plan.tracks) == len(two_pass.tracks)
    differ, worst = region_differences(two_pass, record, two_pass.frame_count)
    assert differ == [] and worst <= 1.0, f"frames {differ[:10]} differ; worst box {worst:.2f} px"


@pytest.mark.media
@pytest.mark.slow
def test_short_window_renders_ahead_and_covers_every_face(footage_plan, tmp_path):
    """hamilton_stage with a 1 s window: frames of its long shots are rendered before their cut, and
    no face-frame the two-pass plan covers is left uncovered (the hand-checked heads neither)."""
    import leaks

    clip = "hamilton_stage.mp4"
    two_pass = footage_plan(clip)
    record = RenderedRegions()
    run_streaming(footage(clip), tmp_path / "o.mp4", lookahead=1.0, record=record)
    assert record.frame_count == two_pass.frame_count
    differ, _ = region_differences(two_pass, record, two_pass.frame_count)
    assert differ, "a 1 s window must render some frames ahead of their cut (else this tests nothing)"
    total, missed = leaks.plan_misses(two_pass, record, RenderConfig())
    assert total > 500 and missed == []
    heads = leaks.measure_heads(footage(clip), record)
    assert heads["heads"] > 700 and heads["leaked"] == 0


def test_keep_photo_streams_and_fails_closed(sample_clip, tmp_path):
    """--keep on the streaming path: the person of the photo stays visible, the other is covered;
    the saved plan says who was kept."""
    from deid_edit.sample import GRACE_HOPPER, photo_path

    clip, truth = sample_clip
    sel = Selection(keep_photos=(str(photo_path(GRACE_HOPPER)),))
    heard = {}
    record = RenderedRegions()
    _, plan = run_streaming(
        clip,
        tmp_path / "o.mp4",
        selection=sel,
        refs=selection_references(sel),
        on_selection=lambda p, r: heard.update(report=r),
        lookahead=60,
        record=record,
    )
    kept = [i for i in plan.identities if i.action == "keep"]
    assert len(kept) == 1
    kept_tracks = set(kept[0].track_ids)
    first_shot = {t.track_id for t in plan.tracks if t.shot_index == 0}
    assert kept_tracks and kept_tracks <= first_shot, "person 0 is the one in the first shot"
    assert heard["report"].kept_tracks() == tuple(sorted(kept_tracks))
    for f in range(truth.frame_count):
        ids = {r.track_id for r in record.regions_at(f)}
        assert not ids & kept_tracks
        if f >= truth.cut_frame + 1:  # the other person's shot: covered
            assert ids


def test_run_streams_unless_it_needs_the_whole_video(sample_clip, tmp_path, caplog):
    """run() streams by default (its log says so); --two-pass analyzes first and writes the same pixels."""
    import logging

    clip, _ = sample_clip
    caplog.set_level(logging.INFO, logger="deid_edit")
    a, _ = run(clip, tmp_path / "a.mp4")
    assert any("streaming:" in r.getMessage() for r in caplog.records)
    caplog.clear()
    b, _ = run(clip, tmp_path / "b.mp4", two_pass=True)
    assert not any("streaming:" in r.getMessage() for r in caplog.records)
    assert all(np.array_equal(x, y) for x, y in zip(frames_of(a), frames_of(b)))


def test_the_detector_leaves_cores_to_the_encoder():
    """Automatic threads: half the cores (at least one) while an encoder runs beside; a number the
    user gave, or a GPU, is left alone."""
    import os

    assert beside_encoder(DetectConfig()).threads == max(1, (os.cpu_count() or 2) // 2)
    assert beside_encoder(DetectConfig(threads=3)).threads == 3
    assert beside_encoder(DetectConfig(device="cuda")).threads == 0


def test_the_same_run_writes_the_same_file(tmp_path):
    """Two streaming runs of one real clip write byte-identical files. Before io.alloc fixed the
    C allocator's mmap threshold, x264 read heap memory it never wrote, left there by whichever
    thread freed it last: three runs of this clip gave three different files, from identical frames."""
    clip = footage("talkinghead_2.mp4")
    digests = []
    for n in range(2):
        out, _ = run_streaming(clip, tmp_path / f"o{n}.mp4")
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
