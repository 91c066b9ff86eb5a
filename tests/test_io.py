"""Video I/O keeps what editors rely on: size, frame count, every timestamp, rotation, SAR, colour
tags, audio bit-exact; codec choices for editors. Generated fixtures plus real footage."""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import quirks
from conftest import decoded, footage, sha256

from deid_edit import analyze, render
from deid_edit.config import EncodeConfig, RenderConfig
from deid_edit.errors import ConfigError
from deid_edit.io.decode import FRAMES_AHEAD, VideoReader, probe


def assert_kept(src: Path, out: Path, same_codec: bool = True) -> None:
    a, b = decoded(src), decoded(out)
    assert b["size"] == a["size"], "resolution changed (padding or scaling)"
    assert b["frames"] == a["frames"]
    assert b["times"] == a["times"], "frame timestamps changed"
    assert b["rotation"] == a["rotation"]
    assert (b["sar"] or 1) == (a["sar"] or 1)
    assert b["colour"] == a["colour"]
    if same_codec:
        assert b["codec"] == a["codec"]
    assert b["audio_streams"] == a["audio_streams"]
    assert b["audio_packets"] == a["audio_packets"], "audio was not copied bit-exact"


def decoded_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])


def test_generated_clip_kept_exactly(sample_clip, sample_plan, tmp_path):
    path, truth = sample_clip
    plan = sample_plan
    assert plan.frame_count == truth.frame_count
    out = render(path, plan, tmp_path / "out.mp4")
    assert_kept(path, out)
    assert np.array_equal(decoded_audio(path), decoded_audio(out)), "decoded audio samples differ"


def test_vfr_and_odd_size_kept(vfr_clip, vfr_plan, tmp_path):
    path, truth = vfr_clip
    out = render(path, vfr_plan, tmp_path / "out.mp4")
    assert_kept(path, out)
    times = decoded(out)["times"]
    steps = np.diff(times)
    assert steps.max() > 1.5 * steps.min(), "fixture is not VFR"
    assert decoded(out)["size"] == (642, 362)


def test_reader_thread_stops_early_and_keeps_input(sample_clip):
    path, _ = sample_clip
    before = sha256(path)
    reader = VideoReader(path)
    for frame in reader.frames():
        if frame.index == 3:
            break
    reader.close()
    assert reader._thread is None
    assert sha256(path) == before


class _CountingReader(VideoReader):
    """Counts the decoded frames queued but not yet taken, the most at any time."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ahead = self.most_ahead = 0  # taken before counted reads one low: never too high
        self._count = threading.Lock()

    def _put(self, item: object) -> bool:
        put = super()._put(item)
        if put and isinstance(item, tuple):
            with self._count:
                self.ahead += 1
                self.most_ahead = max(self.most_ahead, self.ahead)
        return put

    def _get(self) -> object:
        item = super()._get()
        if isinstance(item, tuple):
            with self._count:
                self.ahead -= 1
        return item


def test_reader_holds_as_many_frames_ahead_with_audio_as_after_it(tmp_path):
    """The decode thread's frames ahead are bounded apart from the copied packets: one bound for
    both let a 1080p run grow by 7 decoded frames (55 MiB) where the audio ended."""
    path = tmp_path / "audio_shorter.mp4"
    quirks.audio_shorter(path, [np.full((48, 64, 3), i * 4, np.uint8) for i in range(60)])  # audio over frames 0-39
    reader = _CountingReader(path, copy_streams=(1,))
    most_with_audio = 0
    frames = packets = 0
    for item in reader.items():
        if isinstance(item, av.Packet):
            packets += 1
            continue
        frames += 1
        time.sleep(0.02)  # a slow consumer: the decoder runs as far ahead as it may
        if frames == 15:
            most_with_audio = reader.most_ahead
    reader.close()
    assert frames == 60 and packets > 10
    assert most_with_audio == FRAMES_AHEAD, "the decoder should run ahead while audio packets come too"
    assert reader.most_ahead == FRAMES_AHEAD, "more frames queued once the audio ended"


@pytest.mark.slow  # ~2.6 s: two intermediate-codec renders
def test_prores_and_dnxhr_for_editors(sample_clip, sample_plan, tmp_path):
    path, truth = sample_clip
    plan = sample_plan
    for codec, name in (("prores", "prores"), ("dnxhr", "dnxhd")):
        out = render(path, plan, tmp_path / f"out_{codec}.mov", encode_cfg=EncodeConfig(codec=codec))
        meta = decoded(out)
        assert meta["codec"] == name
        assert meta["frames"] == truth.frame_count
        assert meta["times"] == decoded(path)["times"]
        assert meta["audio_packets"] == decoded(path)["audio_packets"]


def test_prores_in_mp4_is_refused(sample_clip, sample_plan, tmp_path):
    path, _ = sample_clip
    with pytest.raises(ConfigError, match=r"\.mov"):
        render(path, sample_plan, tmp_path / "out.mp4", encode_cfg=EncodeConfig(codec="prores"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # ~1.3 s: two renders
def test_h264_crf_and_preset(sample_clip, sample_plan, tmp_path):
    path, _ = sample_clip
    plan = sample_plan
    small = render(path, plan, tmp_path / "a.mp4", encode_cfg=EncodeConfig(crf=40, preset="ultrafast"))
    big = render(path, plan, tmp_path / "b.mp4", encode_cfg=EncodeConfig(crf=10, preset="ultrafast"))
    assert small.stat().st_size < big.stat().st_size
    assert decoded(small)["frames"] == decoded(big)["frames"]


def test_unfaced_frames_pass_through_unchanged_colour(sample_clip, sample_plan, tmp_path):
    """Frames without a region skip the RGB round trip: background colours stay faithful."""
    path, _ = sample_clip
    out = render(path, sample_plan, tmp_path / "m.mp4", RenderConfig(mode="solid"), EncodeConfig(crf=0, preset="ultrafast"))
    with av.open(str(path)) as a, av.open(str(out)) as b:
        fa = next(iter(a.decode(video=0))).to_ndarray(format="rgb24").astype(int)
        fb = next(iter(b.decode(video=0))).to_ndarray(format="rgb24").astype(int)
    corner = (slice(0, 40), slice(0, 40))  # background, far from the face
    assert np.abs(fa[corner] - fb[corner]).mean() < 2.0


# -- real footage ------------------------------------------------------------------------------
MEDIA = [
    "hamilton_stage.mp4",
    pytest.param("film_dark_vfr_3shots.mp4", marks=pytest.mark.slow),  # ~32 s
    "phone_hevc60_rotated.MOV",
    pytest.param("news_anchor_480p.mp4", marks=pytest.mark.slow),  # ~130 s
    pytest.param("crowd_small_faces_1080p.mp4", marks=pytest.mark.slow),  # ~160 s
]


@pytest.mark.media
@pytest.mark.parametrize("name", MEDIA)
def test_real_footage_kept(name, tmp_path):
    src = footage(name)
    before = sha256(src)
    info = probe(src)
    plan = analyze(src)
    out = render(src, plan, tmp_path / f"out{src.suffix}", encode_cfg=EncodeConfig(preset="ultrafast"))
    assert_kept(src, out)
    assert sha256(src) == before, "input was modified"
    if info.rotation:
        assert plan.video.width == info.coded_height  # detection ran on the upright frame
    assert plan.face_frames() > 0 or name == "film_dark_vfr_3shots.mp4"


def _with_subtitles(src: Path, dst: Path) -> Path:
    """Remux ``src`` into Matroska with an ASS subtitle stream of two events."""
    header = (
        b"[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name\nStyle: Default\n\n"
        b"[Events]\nFormat: Layer, Start, End, Style, Text\n"
    )
    with av.open(str(src)) as s, av.open(str(dst), "w") as d:
        streams = {st.index: d.add_stream_from_template(st) for st in s.streams}
        sub = d.add_stream("ass")
        sub.codec_context.time_base = Fraction(1, 1000)
        sub.codec_context.extradata = header
        for p in s.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                d.mux(p)
        for i, text in enumerate(["first line", "second line"]):
            pk = av.Packet(f"{i},0,Default,,0,0,0,,{text}".encode())
            pk.pts = pk.dts = i * 500
            pk.duration = 400
            pk.time_base = Fraction(1, 1000)
            pk.stream = sub
            d.mux(pk)
    return dst


def _subtitle_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.subtitles) if p.size] if c.streams.subtitles else []


@pytest.mark.slow  # ~23 s: analyzes and renders three containers
def test_subtitles_copied_where_the_container_allows(sample_clip, tmp_path):
    """Subtitles can name people or carry GPS: left out by default, copied with --keep-metadata
    where the container can hold them."""
    from deid_edit.config import EncodeConfig

    src = _with_subtitles(sample_clip[0], tmp_path / "subs.mkv")
    assert len(_subtitle_packets(src)) == 2
    plan = analyze(src)
    assert _subtitle_packets(render(src, plan, tmp_path / "plain.mkv")) == []
    keep = EncodeConfig(keep_metadata=True)
    mkv = render(src, plan, tmp_path / "out.mkv", encode_cfg=keep)
    assert _subtitle_packets(mkv) == _subtitle_packets(src)
    assert_kept(src, mkv)
    # MP4 cannot hold ASS: the subtitles are dropped with a warning, video and audio still exact
    mp4 = render(src, plan, tmp_path / "out.mp4", encode_cfg=keep)
    assert _subtitle_packets(mp4) == []
    assert decoded(mp4)["audio_packets"] == decoded(src)["audio_packets"]


def test_start_timecode_kept_for_editors(tmp_path):
    """A camera/NLE clip starting at 01:00:00;00 renders with the same start timecode, so an editor
    (and the OTIO hand-off) can place the output where the original sits."""
    from deid_edit import run

    src = tmp_path / "tc.mov"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(30000, 1001))
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.metadata["timecode"] = "01:00:00;00"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), i * 10, np.uint8), format="rgb24")
            frame.pts = i
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    out, _ = run(src, tmp_path / "tc.anon.mov")
    with av.open(str(out)) as c:
        assert c.streams.video[0].metadata.get("timecode") == "01:00:00;00"
        assert [s.metadata.get("timecode") for s in c.streams if s.type == "data"] == ["01:00:00;00"]


MMAP_PROBE = """
import ctypes, sys
import numpy as np
from deid_edit.io import alloc
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "fixed":
    assert alloc.fix_mmap_threshold()
big = np.empty(8 << 20, np.uint8); big[:] = 1; del big  # glibc raises a dynamic threshold past this
before = libc.mallinfo2().hblkhd
block = np.empty(1 << 20, np.uint8)
print(libc.mallinfo2().hblkhd - before >= 1 << 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_blocks_stay_mmapped_once_the_threshold_is_fixed():
    """With the threshold fixed (io.alloc, called by open_writer), a 1 MiB block is mmapped (zeroed
    pages) even after an 8 MiB block was freed; with glibc's dynamic threshold it comes from the heap,
    holding whatever was freed there: what made x264's output differ from run to run."""

    def mmapped(mode: str) -> bool:
        out = subprocess.run([sys.executable, "-c", MMAP_PROBE, mode], capture_output=True, text=True, check=True)
        return out.stdout.strip() == "True"

    assert not mmapped("dynamic")
    assert mmapped("fixed")
