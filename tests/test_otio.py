"""The OpenTimelineIO hand-off: timelines written by ``run/render --otio`` and ``deid-edit otio``,
.otio and FCP 7 XML (Premiere), read back with ``opentimelineio`` as an NLE would (layout, paths,
rates, ranges, markers, enabled state), and the clear failures for missing or mismatched media and
existing outputs."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
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
from deid_edit.otio import PPRO_COLORS, ClipSource, build_timeline, fcp_rate, fcp_timeline, start_timecode

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


def read_fcp(path: Path) -> otio.schema.Timeline:
    """An FCP 7 XML timeline as Premiere's importer sees it, through the same OTIO adapter."""
    return otio.adapters.read_from_file(str(path), adapter_name="fcp_xml")


def fcp_md(obj: otio.core.SerializableObject) -> dict:
    """The FCP XML elements the adapter could not map, which it keeps as metadata on read."""
    return dict(obj.metadata.get("fcp_xml", {}))


def assert_layers_aligned(*tracks: otio.schema.Track) -> None:
    """Every track has a clip or gap at the same positions: each layer covers the same frames."""
    spans = [[(c.range_in_parent().start_time.to_seconds(), c.range_in_parent().duration.to_seconds()) for c in t] for t in tracks]
    assert all(s == spans[0] for s in spans), spans


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


def assert_identity_markers(clip: otio.schema.Clip, plan, kept: set[int] = frozenset(), start: int = 0) -> None:
    """One marker per identity at its first track's span (from ``start``, the media's first frame
    number), named with its id, red when anonymized and green when kept."""
    tracks = {t.track_id: t for t in plan.tracks}
    assert len(clip.markers) == len(plan.identities) >= 2
    by_id = {m.metadata["deid_edit"]["identity_id"]: m for m in clip.markers}
    assert sorted(by_id) == sorted(i.identity_id for i in plan.identities)
    for ident in plan.identities:
        m = by_id[ident.identity_id]
        first = min((tracks[k] for k in ident.track_ids), key=lambda t: t.start)
        assert f"person {ident.identity_id}" in m.name and f"person {ident.identity_id}" in m.comment
        keep = ident.identity_id in kept
        assert m.color == (otio.schema.MarkerColor.GREEN if keep else otio.schema.MarkerColor.RED)
        assert m.metadata["deid_edit"]["action"] == ("keep" if keep else "anonymize")
        assert ("kept" if keep else "anonymized") in m.comment and "shot" in m.comment
        assert frame_range(m.marked_range) == (start + first.start, first.end - first.start, m.marked_range.start_time.rate)


def test_run_writes_a_timeline_of_the_render(sample_run, sample_clip):
    timeline = otio.adapters.read_from_file(str(sample_run["otio"]))
    plan = load_plan(sample_run["plan"])
    n = sample_clip[1].frame_count
    assert plan.frame_count == n
    # V1 the original, disabled on the track and the clip; V2 the render, the one live picture
    original, anonymized = video_tracks(timeline)
    assert [original.name, anonymized.name] == ["original", "anonymized"]
    assert not original.enabled and anonymized.enabled
    (oclip,) = list(original)
    (clip,) = list(anonymized)
    assert not oclip.enabled and clip.enabled and "ORIGINAL" in oclip.name
    assert target(oclip) == sample_run["src"].resolve()
    (audio,) = audio_tracks(timeline)  # one audio track, from the render (it carries the source's audio)
    (aclip,) = list(audio)
    # the render is referenced by an absolute file:// URL that round-trips the odd folder name
    for c in (clip, aclip):
        assert target(c) == sample_run["anon"].resolve() and target(c).is_file()
    for c in (oclip, clip, aclip):
        assert frame_range(c.source_range) == (0, n, 25.0)
        assert frame_range(c.media_reference.available_range) == (0, n, 25.0)
    assert_layers_aligned(original, anonymized, audio)
    assert "%20" in clip.media_reference.target_url and "%23" in clip.media_reference.target_url
    assert timeline.duration() == otio.opentime.RationalTime(n, 25.0)
    # a red marker per anonymized identity, on the live clip only
    assert_identity_markers(clip, plan)
    assert not oclip.markers
    meta = timeline.metadata["deid_edit"]
    assert list(meta["layout"]) == ["original", "anonymized"]
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
    timeline_line, closing = out.splitlines()  # the timeline, then the closing line ending in the output
    assert str(tl_path) in timeline_line and closing.endswith(f": {matte}")
    timeline = otio.adapters.read_from_file(str(tl_path))
    base, top = video_tracks(timeline)
    assert [target(c) for c in base] == [sample_run["src"].resolve()]  # the picture to composite on
    assert [target(c) for c in top] == [matte.resolve()]
    assert [base.name, top.name] == ["original", "matte"]
    # the matte is the only render, so it is the live top layer: exported as is, it shows no face
    assert not base.enabled and not base[0].enabled and top.enabled and top[0].enabled
    assert frame_range(top[0].source_range) == frame_range(base[0].source_range) == (0, sample_clip[1].frame_count, 25.0)
    (audio,) = audio_tracks(timeline)
    assert [target(c) for c in audio] == [matte.resolve()]  # one audio clip, from the render
    assert_layers_aligned(base, top, audio)
    assert_identity_markers(top[0], load_plan(sample_run["plan"]), kept={0})
    assert not base[0].markers
    assert timeline.metadata["deid_edit"]["mode"] == "matte"
    assert timeline.metadata["deid_edit"]["identities"]["kept"] == 1


def test_render_writes_fcp_xml_for_premiere(sample_run, sample_clip, capsys):
    """``--otio NAME.xml`` writes FCP 7 XML; read back as Premiere's importer would, it keeps the
    layout, the relinkable paths, the ranges, the disabled original and the identity markers."""
    video_out = sample_run["src"].with_name("clip.keep0.mp4")
    xml = sample_run["src"].with_name("premiere.xml")
    code, out, err = cli(
        capsys, "render", str(sample_run["src"]), "--plan", str(sample_run["plan"]), "-o", str(video_out),
        "--otio", str(xml), "--progress", "none", "--keep-identity", "0",
    )  # fmt: skip
    assert code == 0, err
    timeline_line, closing = out.splitlines()
    assert str(xml) in timeline_line and closing.endswith(f": {video_out}")
    n = sample_clip[1].frame_count
    timeline = read_fcp(xml)
    original, anonymized = video_tracks(timeline)
    (audio,) = audio_tracks(timeline)
    (oclip,), (clip,), (aclip,) = list(original), list(anonymized), list(audio)
    assert target(oclip) == sample_run["src"].resolve()
    assert target(clip) == target(aclip) == video_out.resolve()
    for c in (oclip, clip, aclip):
        # Premiere's own form of file URL, percent-encoded: "my clips #1" relinks
        assert c.media_reference.target_url.startswith("file://localhost/")
        assert "my%20clips%20%231" in c.media_reference.target_url
        assert frame_range(c.source_range) == (0, n, 25.0)
        assert frame_range(c.media_reference.available_range) == (0, n, 25.0)
    assert_layers_aligned(original, anonymized, audio)
    # the adapter maps no enabled state: it is in the XML (<enabled>FALSE</enabled>) and read back as such
    assert fcp_md(original)["enabled"] == "FALSE" and fcp_md(oclip)["enabled"] == "FALSE"
    assert "enabled" not in fcp_md(anonymized) and "enabled" not in fcp_md(clip)
    assert fcp_md(aclip)["sourcetrack"] == {"mediatype": "audio", "trackindex": "1"}
    assert not oclip.markers
    # markers: name, in/out survive; comment and Premiere's colour code come back as XML metadata
    plan = load_plan(sample_run["plan"])
    tracks = {t.track_id: t for t in plan.tracks}
    by_name = {m.name: m for m in clip.markers}
    assert len(by_name) == len(plan.identities)
    for ident in plan.identities:
        m = by_name[f"person {ident.identity_id}"]
        first = min((tracks[k] for k in ident.track_ids), key=lambda t: t.start)
        assert frame_range(m.marked_range) == (first.start, first.end - first.start, 25.0)
        keep = ident.identity_id == 0
        md = fcp_md(m)
        assert md["comment"].startswith(f"person {ident.identity_id} {'kept' if keep else 'anonymized'}")
        color = otio.schema.MarkerColor.GREEN if keep else otio.schema.MarkerColor.RED
        assert md["pproColor"] == str(PPRO_COLORS[color])
    size = fcp_md(timeline)["media"]["video"]["format"]["samplecharacteristics"]
    assert (int(size["width"]), int(size["height"])) == (plan.video.width, plan.video.height)
    # the file itself: FCP 7 XML with the doctype Premiere writes, each file once (the audio shares V2's)
    text = xml.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE xmeml>')
    root = ET.fromstring(text)
    assert root.tag == "xmeml"
    urls = [e.text for e in root.iter("pathurl")]
    assert sorted(Path(filepath_from_url(u)) for u in urls) == sorted([sample_run["src"].resolve(), video_out.resolve()])


def test_fcp_markers_count_from_the_media_start():
    """FCP XML places clip markers from the media's first frame; OTIO from its start timecode."""
    rate = 30000 / 1001
    start = 107892  # 01:00:00;00
    ref = otio.schema.ExternalReference(
        target_url="file:///footage/a.mov",
        available_range=otio.opentime.TimeRange(otio.opentime.RationalTime(start, rate), otio.opentime.RationalTime(100, rate)),
        metadata={"deid_edit": {"timecode": "01:00:00;00"}},
    )
    clip = otio.schema.Clip(name="a.mov", media_reference=ref, source_range=ref.available_range)
    clip.markers.append(
        otio.schema.Marker(
            name="person 3",
            marked_range=otio.opentime.TimeRange(otio.opentime.RationalTime(start + 5, rate), otio.opentime.RationalTime(10, rate)),
            color=otio.schema.MarkerColor.GREEN,
            comment="person 3 kept",
        )
    )
    track = otio.schema.Track(kind=otio.schema.TrackKind.Video)
    track.append(clip)
    tl = otio.schema.Timeline(name="t", global_start_time=otio.opentime.RationalTime(0, rate))
    tl.tracks.append(track)
    text = otio.adapters.write_to_string(fcp_timeline(tl), "fcp_xml")
    back = otio.adapters.read_from_string(text, "fcp_xml")
    (c,) = list(video_tracks(back)[0])
    assert c.source_range.start_time == otio.opentime.RationalTime(start, rate)  # the clip from its timecode
    (m,) = c.markers
    assert (m.marked_range.start_time.value, m.marked_range.duration.value) == (5, 10)
    assert "<string>01:00:00;00</string>" in text and "<displayformat>DF</displayformat>" in text
    assert c.media_reference.target_url == "file://localhost/footage/a.mov"
    assert clip.markers[0].marked_range.start_time.value == start + 5  # the timeline itself is untouched


def test_fcp_rate_is_an_fcp_timebase():
    """Standard rates pass exactly; an odd average (phone VFR) snaps to the nearest FCP rate."""
    for rate in (24.0, 25.0, 30.0, 50.0, 60.0, 24000 / 1001, 30000 / 1001, 60000 / 1001):
        assert fcp_rate(rate) == rate
    assert fcp_rate(30.02) == 30.0
    assert fcp_rate(29.95) == 30000 / 1001
    assert fcp_rate(59.9) == 60000 / 1001


def test_ntsc_rate_survives(ntsc_run):
    rate = float(NTSC)
    timeline = otio.adapters.read_from_file(str(ntsc_run["otio"]))
    assert not audio_tracks(timeline)  # the clip has no audio: no audio track
    original, anonymized = video_tracks(timeline)
    (oclip,), (clip,) = list(original), list(anonymized)
    assert target(clip) == ntsc_run["anon"].resolve()
    tc = start_timecode(ntsc_run["anon"])
    start = otio.opentime.from_timecode(tc, rate).value if tc else 0
    assert clip.source_range.start_time == otio.opentime.RationalTime(start, rate)
    assert clip.source_range.duration == otio.opentime.RationalTime(NTSC_FRAMES, rate)
    assert clip.source_range.duration.rate == 30000 / 1001  # exact, not 29.97
    # the original from its own drop-frame start timecode, the same frames at the same place
    assert target(oclip) == ntsc_run["src"].resolve()
    assert oclip.source_range == otio.opentime.TimeRange(
        otio.opentime.RationalTime(107892, rate), otio.opentime.RationalTime(NTSC_FRAMES, rate)
    )
    assert_layers_aligned(original, anonymized)
    assert timeline.metadata["deid_edit"]["rate"] == "30000/1001"
    assert timeline.metadata["deid_edit"]["source_timecode"] == NTSC_TIMECODE


def test_start_timecode_of_the_media_is_the_clip_start(ntsc_run, tmp_path, capsys):
    """Media that carries a start timecode is referenced from it, as the NLE numbers its frames."""
    out = tmp_path / "tc.otio"
    code, _, err = cli(capsys, "otio", str(ntsc_run["plan"]), "--media", str(ntsc_run["src"]), "-o", str(out), "--progress", "none")
    assert code == 0, err
    timeline = otio.adapters.read_from_file(str(out))
    (clip,) = list(video_tracks(timeline)[-1])
    rate = 30000 / 1001
    assert start_timecode(ntsc_run["src"]) == NTSC_TIMECODE
    assert clip.source_range.start_time == otio.opentime.RationalTime(107892, rate)
    assert clip.media_reference.available_range.start_time.to_timecode(rate) == NTSC_TIMECODE


def test_fcp_xml_keeps_ntsc_rate_and_drop_frame_timecode(ntsc_run, tmp_path, capsys):
    """29.97 stays 30000/1001 (timebase 30, NTSC) and a drop-frame start timecode stays DF in the XML."""
    out = tmp_path / "tc.xml"
    code, _, err = cli(capsys, "otio", str(ntsc_run["plan"]), "--media", str(ntsc_run["src"]), "-o", str(out), "--progress", "none")
    assert code == 0, err
    rate = 30000 / 1001
    original, top = video_tracks(read_fcp(out))
    for track in (original, top):
        (clip,) = list(track)
        assert target(clip) == ntsc_run["src"].resolve()
        assert clip.source_range == otio.opentime.TimeRange(
            otio.opentime.RationalTime(107892, rate), otio.opentime.RationalTime(NTSC_FRAMES, rate)
        )
    root = ET.parse(out).getroot()
    assert {e.findtext("string") for e in root.iter("timecode") if e.find("frame") is not None and e.findtext("frame") != "0"} == {
        NTSC_TIMECODE
    }
    assert {(e.findtext("timebase"), e.findtext("ntsc")) for e in root.iter("rate")} == {("30", "TRUE")}


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
    # V1 originals, V2 mattes (disabled: keys for the editor), V3 the renders, the one live picture
    original, matte_track, main_track = video_tracks(timeline)
    assert [t.name for t in (original, matte_track, main_track)] == ["original", "matte", "anonymized"]
    assert [t.enabled for t in (original, matte_track, main_track)] == [False, False, True]
    assert not any(c.enabled for c in [*original, *matte_track]) and all(c.enabled for c in main_track)
    (audio,) = audio_tracks(timeline)
    assert [target(c) for c in original] == [sample_run["src"].resolve(), ntsc_run["src"].resolve()]
    assert [target(c) for c in main_track] == [sample_run["anon"].resolve(), ntsc_run["anon"].resolve()]
    assert [target(c) for c in matte_track] == [m.resolve() for m in mattes]
    assert_layers_aligned(original, matte_track, main_track, audio)
    assert len(main_track[0].markers) == len(load_plan(sample_run["plan"]).identities)
    assert not main_track[1].markers  # the 29.97 clip has no faces
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
    (clip,) = list(video_tracks(timeline)[-1])
    assert target(clip) == sample_run["anon"].resolve()


def test_missing_original_is_referenced_offline(sample_run, tmp_path, caplog):
    """An original withheld from the editing machine still has its place on V1 (offline in the NLE)."""
    plan = load_plan(sample_run["plan"])
    gone = tmp_path / "withheld.mp4"
    timeline = build_timeline([ClipSource(plan, gone, sample_run["anon"])], "t")
    original, anonymized = video_tracks(timeline)
    assert target(original[0]) == gone.resolve() and not original.enabled
    assert_layers_aligned(original, anonymized)
    assert any("original not found" in r.getMessage() for r in caplog.records)


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


def test_timeline_must_be_otio_or_xml(sample_run, tmp_path, capsys):
    video_out = tmp_path / "new.anon.mp4"
    edl = tmp_path / "cuts.edl"
    code, _, err = cli(capsys, "run", str(sample_run["src"]), "-o", str(video_out), "--otio", str(edl), "--progress", "none")
    assert code == 2
    _one_line_naming(err, "cuts.edl")
    assert ".otio" in err and ".xml" in err
    assert not video_out.exists()


def test_fcp_xml_without_the_adapter_says_how_to_get_it(sample_run, tmp_path, capsys, monkeypatch):
    def missing(name: str):
        raise otio.exceptions.NotSupportedError(f"no adapter {name}")

    monkeypatch.setattr(otio.adapters, "from_name", missing)
    out = tmp_path / "x.xml"
    code, _, err = cli(capsys, "otio", str(sample_run["plan"]), "-o", str(out), "--progress", "none")
    assert code == 2
    _one_line_naming(err, "pip install otio-fcp-adapter")
    assert not out.exists()


def test_json_progress_reports_the_timeline(sample_run, tmp_path, capsys):
    import json

    out = tmp_path / "j.otio"
    code, stdout, err = cli(capsys, "otio", str(sample_run["plan"]), "-o", str(out), "--progress", "json")
    assert code == 0, err
    done = json.loads(stdout.strip().splitlines()[-1])
    assert done["stage"] == "done" and done["output"] == str(out) and done["clips"] == 1
