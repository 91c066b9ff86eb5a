"""The OpenTimelineIO hand-off: timelines written by ``run/render --otio`` and ``deid-edit otio``,
read back with ``opentimelineio`` as an NLE would (paths, rates, ranges, markers, tracks), and the
clear failures for missing or mismatched media and existing outputs."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest
from conftest import cli_main
from opentimelineio.url_utils import filepath_from_url

from deid_edit import load_plan
from deid_edit.cli import main
from deid_edit.otio import start_timecode

NTSC = Fraction(30000, 1001)
NTSC_FRAMES = 12
NTSC_TIMECODE = "01:00:00;00"  # drop frame: 107892 frames at 29.97


cli = cli_main


def make_ntsc_clip(path: Path) -> None:
    """A tiny 29.97 fps clip (no faces, no audio) with a drop-frame start timecode, as cameras write."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as c:
        c.metadata["timecode"] = NTSC_TIMECODE
        s = c.add_stream("libx264", rate=NTSC)
        s.width, s.height, s.pix_fmt = 128, 72, "yuv420p"
        for _ in range(NTSC_FRAMES):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (72, 128, 3), np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def video_tracks(timeline: otio.schema.Timeline) -> list[otio.schema.Track]:
    return [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video]


def audio_tracks(timeline: otio.schema.Timeline) -> list[otio.schema.Track]:
    return [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Audio]


def target(clip: otio.schema.Clip) -> Path:
    url = clip.media_reference.target_url
    assert url.startswith("file://"), url
    return Path(filepath_from_url(url))


def frame_range(r: otio.opentime.TimeRange) -> tuple[float, float, float]:
    """(start frame, duration in frames, rate) of a range, exactly as stored."""
    return r.start_time.value, r.duration.value, r.start_time.rate


@pytest.fixture(scope="module")
def sample_run(sample_clip, tmp_path_factory) -> dict[str, Path]:
    """The sample clip run once with --otio, in a folder whose name needs URL escaping."""
    folder = tmp_path_factory.mktemp("otio") / "my clips #1"
    folder.mkdir()
    src = folder / "clip.mp4"
    shutil.copy(sample_clip[0], src)
    paths = {"src": src, "anon": folder / "clip.anon.mp4", "plan": folder / "clip.mp4.deid.json", "otio": folder / "run.otio"}
    code = main_code("run", str(src), "--save-plan", str(paths["plan"]), "--otio", str(paths["otio"]), "--progress", "none")
    assert code == 0
    return paths


@pytest.fixture(scope="module")
def ntsc_run(tmp_path_factory) -> dict[str, Path]:
    """The 29.97 clip run once with --otio."""
    folder = tmp_path_factory.mktemp("ntsc")
    src = folder / "ntsc.mov"
    make_ntsc_clip(src)
    paths = {"src": src, "anon": folder / "ntsc.anon.mov", "plan": folder / "ntsc.mov.deid.json", "otio": folder / "ntsc.otio"}
    code = main_code("run", str(src), "--save-plan", str(paths["plan"]), "--otio", str(paths["otio"]), "--progress", "none")
    assert code == 0
    return paths


def main_code(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_run_writes_a_timeline_of_the_render(sample_run, sample_clip):
    timeline = otio.adapters.read_from_file(str(sample_run["otio"]))
    plan = load_plan(sample_run["plan"])
    n = sample_clip[1].frame_count
    assert plan.frame_count == n
    (video,) = video_tracks(timeline)
    (audio,) = audio_tracks(timeline)  # the sample has audio, carried by the render
    (clip,) = list(video)
    (aclip,) = list(audio)
    # both reference the render, which exists, by an absolute file:// URL that round-trips the odd folder name
    for c in (clip, aclip):
        assert target(c) == sample_run["anon"].resolve() and target(c).is_file()
        assert frame_range(c.source_range) == (0, n, 25.0)
        assert frame_range(c.media_reference.available_range) == (0, n, 25.0)
    assert "%20" in clip.media_reference.target_url and "%23" in clip.media_reference.target_url
    assert timeline.duration() == otio.opentime.RationalTime(n, 25.0)
    # a red marker per anonymized person, at their first track's span
    assert len(clip.markers) == len(plan.identities) >= 2
    tracks = {t.track_id: t for t in plan.tracks}
    by_name = {m.name: m for m in clip.markers}
    for ident in plan.identities:
        m = by_name[ident.label or f"person {ident.identity_id}"]
        first = min((tracks[k] for k in ident.track_ids), key=lambda t: t.start)
        assert m.color == otio.schema.MarkerColor.RED
        assert frame_range(m.marked_range) == (first.start, first.end - first.start, 25.0)
        assert "anonymized" in m.comment and "shot" in m.comment
    meta = timeline.metadata["deid_edit"]
    assert Path(meta["source"]) == sample_run["src"].resolve()
    assert Path(meta["output"]) == sample_run["anon"].resolve()
    assert Path(meta["plan"]) == sample_run["plan"].resolve()
    assert meta["mode"] == "blur" and meta["identities"]["anonymized"] == len(plan.identities)
    assert meta["version"] and meta["created"]


def test_render_matte_puts_source_and_matte_on_two_tracks(sample_run, sample_clip, capsys):
    matte = sample_run["src"].with_name("clip.matte.mp4")
    tl_path = sample_run["src"].with_name("matte.otio")
    code, out, err = cli(
        capsys, "render", str(sample_run["src"]), "--plan", str(sample_run["plan"]), "--mode", "matte", "-o", str(matte),
        "--otio", str(tl_path), "--progress", "none", "--keep-identity", "0",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [str(matte), str(tl_path)]
    timeline = otio.adapters.read_from_file(str(tl_path))
    base, top = video_tracks(timeline)
    assert [target(c) for c in base] == [sample_run["src"].resolve()]  # the picture to composite on
    assert [target(c) for c in top] == [matte.resolve()]
    assert top.name == "matte"
    assert frame_range(top[0].source_range) == frame_range(base[0].source_range) == (0, sample_clip[1].frame_count, 25.0)
    colors = {m.name: m.color for m in base[0].markers}
    assert colors["person 0"] == otio.schema.MarkerColor.GREEN and colors["person 1"] == otio.schema.MarkerColor.RED
    assert timeline.metadata["deid_edit"]["mode"] == "matte"
    assert timeline.metadata["deid_edit"]["identities"]["kept"] == 1


def test_ntsc_rate_survives(ntsc_run):
    rate = float(NTSC)
    timeline = otio.adapters.read_from_file(str(ntsc_run["otio"]))
    assert not audio_tracks(timeline)  # the clip has no audio: no audio track
    (clip,) = list(video_tracks(timeline)[0])
    assert target(clip) == ntsc_run["anon"].resolve()
    tc = start_timecode(ntsc_run["anon"])
    start = otio.opentime.from_timecode(tc, rate).value if tc else 0
    assert clip.source_range.start_time == otio.opentime.RationalTime(start, rate)
    assert clip.source_range.duration == otio.opentime.RationalTime(NTSC_FRAMES, rate)
    assert clip.source_range.duration.rate == 30000 / 1001  # exact, not 29.97
    assert timeline.metadata["deid_edit"]["rate"] == "30000/1001"
    assert timeline.metadata["deid_edit"]["source_timecode"] == NTSC_TIMECODE


def test_start_timecode_of_the_media_is_the_clip_start(ntsc_run, tmp_path, capsys):
    """Media that carries a start timecode is referenced from it, as the NLE numbers its frames."""
    out = tmp_path / "tc.otio"
    code, _, err = cli(capsys, "otio", str(ntsc_run["plan"]), "--media", str(ntsc_run["src"]), "-o", str(out), "--progress", "none")
    assert code == 0, err
    timeline = otio.adapters.read_from_file(str(out))
    (clip,) = list(video_tracks(timeline)[0])
    rate = 30000 / 1001
    assert start_timecode(ntsc_run["src"]) == NTSC_TIMECODE
    assert clip.source_range.start_time == otio.opentime.RationalTime(107892, rate)
    assert clip.media_reference.available_range.start_time.to_timecode(rate) == NTSC_TIMECODE


def test_otio_command_two_plans_with_mattes(sample_run, ntsc_run, tmp_path, capsys):
    mattes = []
    for run in (sample_run, ntsc_run):
        m = tmp_path / f"{run['src'].stem}.matte{run['src'].suffix}"
        args = ("render", str(run["src"]), "--plan", str(run["plan"]), "--mode", "matte", "-o", str(m), "--progress", "none")
        code, _, err = cli(capsys, *args)
        assert code == 0, err
        mattes.append(m)
    out = tmp_path / "two.otio"
    code, stdout, err = cli(
        capsys, "otio", str(sample_run["plan"]), str(ntsc_run["plan"]), "-o", str(out),
        "--media", str(sample_run["anon"]), "--media", str(ntsc_run["anon"]),
        "--matte", str(mattes[0]), "--matte", str(mattes[1]), "--progress", "none",
    )  # fmt: skip
    assert code == 0, err
    assert stdout.strip() == str(out)
    timeline = otio.adapters.read_from_file(str(out))
    main_track, matte_track = video_tracks(timeline)
    (audio,) = audio_tracks(timeline)
    assert [target(c) for c in main_track] == [sample_run["anon"].resolve(), ntsc_run["anon"].resolve()]
    assert [target(c) for c in matte_track] == [m.resolve() for m in mattes]
    n0 = load_plan(sample_run["plan"]).frame_count
    rate = 30000 / 1001
    a, b = list(main_track)
    assert frame_range(a.source_range) == (0, n0, 25.0)
    assert b.source_range.duration == otio.opentime.RationalTime(NTSC_FRAMES, rate)
    # one after another, and the matte and audio tracks stay aligned with the video clips
    assert a.range_in_parent().start_time.value == 0
    assert b.range_in_parent().start_time == otio.opentime.RationalTime(n0, 25.0)
    for v, m in zip(main_track, matte_track):
        assert m.range_in_parent() == v.range_in_parent()
    assert isinstance(audio[0], otio.schema.Clip) and target(audio[0]) == sample_run["anon"].resolve()
    assert isinstance(audio[1], otio.schema.Gap)  # the 29.97 clip has no audio
    assert audio[1].range_in_parent() == b.range_in_parent()
    assert [Path(c["source"]) for c in timeline.metadata["deid_edit"]["clips"]] == [sample_run["src"].resolve(), ntsc_run["src"].resolve()]


def test_otio_command_default_media_is_the_run_output(sample_run, tmp_path, capsys):
    out = tmp_path / "default.otio"
    code, _, err = cli(capsys, "otio", str(sample_run["plan"]), "-o", str(out), "--progress", "none")
    assert code == 0, err
    timeline = otio.adapters.read_from_file(str(out))
    (clip,) = list(video_tracks(timeline)[0])
    assert target(clip) == sample_run["anon"].resolve()


def _one_line_naming(err: str, name: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert name in lines[0], err


def test_missing_media_is_one_clear_line(sample_run, tmp_path, capsys):
    out = tmp_path / "x.otio"
    missing = tmp_path / "gone.anon.mp4"
    code, _, err = cli(capsys, "otio", str(sample_run["plan"]), "--media", str(missing), "-o", str(out), "--progress", "none")
    assert code == 1
    _one_line_naming(err, str(missing))
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_media_of_another_plan_is_refused(sample_run, ntsc_run, tmp_path, capsys):
    out = tmp_path / "x.otio"
    code, _, err = cli(capsys, "otio", str(sample_run["plan"]), "--media", str(ntsc_run["anon"]), "-o", str(out), "--progress", "none")
    assert code == 1
    _one_line_naming(err, str(ntsc_run["anon"]))
    assert f"{NTSC_FRAMES} frames" in err
    assert not out.exists()


def test_media_count_must_match_plans(sample_run, tmp_path, capsys):
    out = tmp_path / "x.otio"
    args = ("otio", str(sample_run["plan"]), str(sample_run["plan"]), "--media", str(sample_run["anon"]), "-o", str(out))
    code, _, err = cli(capsys, *args)
    assert code == 2 and "--media" in err and not out.exists()


def test_existing_timeline_needs_force(sample_run, tmp_path, capsys):
    out = tmp_path / "x.otio"
    out.write_text("keep me")
    code, _, err = cli(capsys, "otio", str(sample_run["plan"]), "-o", str(out), "--progress", "none")
    assert code == 1
    _one_line_naming(err, str(out))
    assert out.read_text() == "keep me"
    code, _, err = cli(capsys, "otio", str(sample_run["plan"]), "-o", str(out), "--force", "--progress", "none")
    assert code == 0, err
    timeline = otio.adapters.read_from_file(str(out))  # keep the owner alive: OTIO metadata dies with it
    assert Path(timeline.metadata["deid_edit"]["source"]) == sample_run["src"].resolve()


def test_run_refuses_an_existing_timeline_before_working(sample_run, tmp_path, capsys):
    video_out = tmp_path / "new.anon.mp4"
    code, _, err = cli(capsys, "run", str(sample_run["src"]), "-o", str(video_out), "--otio", str(sample_run["otio"]), "--progress", "none")
    assert code == 1
    _one_line_naming(err, str(sample_run["otio"]))
    assert not video_out.exists()  # refused before the analysis, not after the render


def test_timeline_must_be_otio(sample_run, tmp_path, capsys):
    video_out = tmp_path / "new.anon.mp4"
    edl = tmp_path / "cuts.edl"
    code, _, err = cli(capsys, "run", str(sample_run["src"]), "-o", str(video_out), "--otio", str(edl), "--progress", "none")
    assert code == 2
    _one_line_naming(err, "cuts.edl")
    assert not video_out.exists()


def test_json_progress_reports_the_timeline(sample_run, tmp_path, capsys):
    import json

    out = tmp_path / "j.otio"
    code, stdout, err = cli(capsys, "otio", str(sample_run["plan"]), "-o", str(out), "--progress", "json")
    assert code == 0, err
    done = json.loads(stdout.strip().splitlines()[-1])
    assert done["stage"] == "done" and done["output"] == str(out) and done["clips"] == 1
