"""Source protection beyond the face: crafted inputs carrying location, device, names and
telemetry; each output is read back. By default none of it is there; with --keep-metadata it is;
the audit fails on an output that still has it; outputs are readable like any new file."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import cli_main, footage

from deid_edit.io.metadata import findings, removed_by_default

GPS = "+37.4219-122.0840/"


def craft(
    path: Path,
    meta: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    *,
    subtitle: bool = False,
    data: bool = False,
    attachment: bool = False,
    chapters: bool = False,
    stream_meta: dict[str, str] | None = None,
) -> Path:
    """A 12-frame 64x64 clip with the given container tags, muxer options and side content."""
    c = av.open(str(path), "w", options=options or {})
    c.metadata.update(meta or {})
    v = c.add_stream("libx264", rate=25)
    v.width = v.height = 64
    v.pix_fmt = "yuv420p"
    v.metadata.update(stream_meta or {})
    side = None
    if subtitle:
        side = c.add_mux_stream("subrip" if path.suffix == ".mkv" else "mov_text")
    elif data:
        side = c.add_data_stream()
    if attachment:
        c.add_attachment("notes.txt", "text/plain", b"address: 1 Main St")
    if chapters:
        c.set_chapters(
            [{"id": 1, "start": 0, "end": 200, "time_base": Fraction(1, 1000), "metadata": {"title": "Meeting with the source"}}]
        )
    if side is not None:
        side.time_base = Fraction(1, 1000)
        c.start_encoding()
        p = av.Packet(b"GPS 37.4219, -122.0840 ALT 10m")
        p.stream, p.pts, p.dts, p.duration, p.time_base = side, 0, 0, 300, Fraction(1, 1000)
        c.mux(p)
    for i in range(12):
        f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i, np.uint8), format="rgb24")
        f.pts, f.time_base = i, Fraction(1, 25)
        for pkt in v.encode(f):
            c.mux(pkt)
    for pkt in v.encode(None):
        c.mux(pkt)
    c.close()
    return path


def everything(path: Path) -> str:
    """Every tag, stream, chapter and attachment of a file, and its subtitle/data payloads, as text."""
    with av.open(str(path)) as c:
        parts = [repr(dict(c.metadata)), repr(list(c.chapters()))]
        for s in c.streams:
            parts += [s.type, repr(dict(s.metadata))]
            if s.type == "attachment":
                parts.append(bytes(s.data).decode(errors="replace"))
        for pkt in c.demux():
            if pkt.stream.type in ("subtitle", "data") and pkt.size:
                parts.append(bytes(pkt).decode(errors="replace"))
    return "\n".join(parts)


CASES = {
    # an Android-style MP4: ©xyz location, dates, a title naming the interviewee
    "android.mp4": ({"location": GPS, "creation_time": "2026-01-01T10:00:00Z", "title": "Interview with Jane Doe"}, None, {}),
    # make, model and serial as mdta keys (what phones write)
    "device.mp4": ({"make": "Google", "model": "Pixel 7", "serial": "SN123456"}, {"movflags": "use_metadata_tags"}, {}),
    # Apple's keys, written with use_metadata_tags as an iPhone does
    "iphone.mov": (
        {
            "com.apple.quicktime.location.ISO6709": "+37.4219-122.0840+010.000/",
            "com.apple.quicktime.make": "Apple",
            "com.apple.quicktime.model": "iPhone 15",
            "com.apple.quicktime.software": "17.1",
        },
        {"movflags": "use_metadata_tags"},
        {},
    ),  # fmt: skip
    "tagged.mkv": ({"title": "secret", "ARTIST": "Jane Doe", "COMMENT": "at the safe house"}, None, {"attachment": True, "chapters": True}),
    "drone.mkv": ({}, None, {"subtitle": True}),  # telemetry written as subtitles
}
SECRETS = ("37.42", "Jane", "Pixel", "SN123456", "iPhone", "safe house", "Main St", "Meeting", "2026-01-01")


@pytest.mark.parametrize("name", sorted(CASES))
def test_identifying_metadata_is_left_out_and_kept_on_request(name, tmp_path, capsys):
    meta, options, extra = CASES[name]
    src = craft(tmp_path / name, meta, options, **extra)
    present = [s for s in SECRETS if s in everything(src)]
    assert present, "the crafted input must carry something to remove"
    assert removed_by_default(src)

    out = tmp_path / f"anon.{name}"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--progress", "none")
    assert code == 0, err
    text = everything(out)
    assert not [s for s in present if s in text], text
    assert findings(out) == [] and "metadata removed" in err

    kept = tmp_path / f"kept.{name}"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(kept), "--keep-metadata", "--progress", "none")
    assert code == 0, err
    assert [s for s in present if s in everything(kept)] == present
    # the audit fails on an output that still carries it, naming what
    code, out_text, _ = cli_main(capsys, "audit", str(src), str(kept), "--progress", "none")
    assert code == 3 and "metadata that can locate or identify" in out_text, out_text
    code, out_text, _ = cli_main(capsys, "audit", str(src), str(out), "--progress", "none")
    assert "metadata that can locate" not in out_text


def test_a_data_stream_is_left_out_and_kept_on_request(tmp_path, capsys):
    """Telemetry in a data stream (KLV-like, in MPEG-TS) never reaches the output by default; with
    --keep-metadata a .ts output carries it. (FFmpeg's MP4/MOV/MKV muxers cannot write a data
    stream without a codec, such as Apple's mebx or GoPro's GPMF: there it is always left out.)"""
    src = craft(tmp_path / "telemetry.ts", data=True)
    assert "37.42" in everything(src) and "data stream #1" in removed_by_default(src)
    for name in ("anon.ts", "anon.mkv"):
        out = tmp_path / name
        code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--progress", "none")
        assert code == 0, err
        assert "37.42" not in everything(out) and findings(out) == []
    kept = tmp_path / "kept.ts"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(kept), "--keep-metadata", "--progress", "none")
    assert code == 0, err
    assert "37.42" in everything(kept) and findings(kept)


def test_plan_records_what_is_removed(tmp_path):
    from deid_edit import analyze

    src = craft(tmp_path / "android.mp4", {"location": GPS})
    assert "tag location" in analyze(src).config["metadata_removed"]


def test_start_timecode_and_audio_language_are_kept(tmp_path, capsys):
    """What editing needs stays: the start timecode (conforming, the OTIO hand-off) and stream languages."""
    src = craft(tmp_path / "tc.mov", stream_meta={"timecode": "10:00:00:00", "language": "fra"})
    out = tmp_path / "anon.mov"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--progress", "none")
    assert code == 0, err
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.metadata.get("timecode") == "10:00:00:00" and v.metadata.get("language") == "fra"
    assert findings(out) == []


def test_output_permissions_follow_the_umask(tmp_path, capsys):
    src = craft(tmp_path / "clip.mp4")
    out = tmp_path / "anon.mp4"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--progress", "none")
    assert code == 0, err
    touched = tmp_path / "touched"
    touched.touch()
    assert os.stat(out).st_mode & 0o777 == os.stat(touched).st_mode & 0o777


@pytest.mark.media
def test_iphone_clip_loses_location_device_and_dates():
    """The real iPhone clip: Apple location, make, model, software, creation dates, Core Media
    handler names and three timed-metadata streams; none of it reaches the output."""
    src = footage("phone_hevc60_rotated.MOV")
    removed = removed_by_default(src)
    assert "tag com.apple.quicktime.location.ISO6709" in removed and sum(r.startswith("data stream") for r in removed) == 3
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "anon.mov"
        from deid_edit import run

        run(src, out)
        assert findings(out) == []
        text = everything(out)
        assert "Apple" not in text and "Core Media" not in text and "2021-02-08" not in text
