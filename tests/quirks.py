"""A corpus of footage quirks as phones, cameras and edit suites write them, generated with PyAV.

Each maker writes one small file from the same RGB frames (the sample clip's, so a real face is in
every frame) and returns what a player shows: the frames' presentation times in seconds, the size,
and the audio a listener hears. ``tests/test_quirks.py`` runs each through ``deid-edit run`` and
checks the output shows the same frames at the same times, at the same size and rotation, with the
same audio, or that the file is refused before the analysis with one clear line.

Why generated: the real quirks (edit lists from phone trims, B-frame timestamps below zero, open
GOPs, 10-bit HDR, interlaced broadcast, MXF, WebM, AVI) come from cameras and NLEs this machine does
not have; PyAV's FFmpeg writes each of them exactly, and the test owns no binary files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

FPS = 25
AUDIO_RATE = 48000


@dataclass(frozen=True)
class Expect:
    """What a player shows of a quirk file (the output must show the same)."""

    frames: int
    times: tuple[Fraction, ...]  # presentation time of every shown frame, seconds
    width: int
    height: int
    rotation: int = 0
    audio_streams: int = 0
    pix_fmt: str = "yuv420p"
    color: dict[str, int] = field(default_factory=dict)  # codec-context colour tags to keep
    field_order: str | None = None
    timecode: str | None = None
    header_frames: int | None = None  # what the container header claims, when it disagrees
    offset: int = 0  # index of the first shown frame among the frames encoded


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    n = np.arange(int(round(seconds * AUDIO_RATE)))
    return (0.2 * np.sin(2 * np.pi * hz * n / AUDIO_RATE)).astype(np.float32)


def _add_audio(out: av.container.OutputContainer, codec: str, rate: int = AUDIO_RATE, language: str | None = None) -> av.AudioStream:
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "stereo" if codec != "pcm_s16le" else "stereo"
    if language:
        stream.metadata["language"] = language
    return stream


def _audio_packets(stream: av.AudioStream, samples: np.ndarray) -> list[av.Packet]:
    """Encode a mono tone as stereo in the encoder's frame size; returns the packets in order."""
    cc = stream.codec_context
    fmt = cc.format.name if cc.format else "fltp"
    size = cc.frame_size or 1024
    packets: list[av.Packet] = []
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        if len(chunk) < size and cc.frame_size:
            chunk = np.pad(chunk, (0, size - len(chunk)))
        if fmt.startswith("s16"):
            data = (np.stack([chunk, chunk]) * 32767).astype(np.int16)
            data = data.T.reshape(1, -1) if not fmt.endswith("p") else data
        else:
            data = np.stack([chunk, chunk])
            data = data.T.reshape(1, -1) if not fmt.endswith("p") else data
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
        frame.sample_rate = cc.sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, cc.sample_rate)
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def _video(
    out: av.container.OutputContainer,
    codec: str,
    size: tuple[int, int],
    pix_fmt: str,
    options: dict[str, str] | None = None,
    time_base: Fraction | None = None,
    bit_rate: int | None = None,
) -> av.VideoStream:
    stream = out.add_stream(codec, rate=FPS)
    stream.width, stream.height = size
    stream.pix_fmt = pix_fmt
    tb = time_base or Fraction(1, FPS)
    stream.time_base = tb
    stream.codec_context.time_base = tb
    if bit_rate:
        stream.codec_context.bit_rate = bit_rate
    stream.options = dict(options or {})
    if codec == "libx264":
        stream.options.setdefault("threads", "2")
    return stream


def _frames(rgb: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    w, h = size
    if rgb[0].shape[1] == w and rgb[0].shape[0] == h:
        return rgb
    return [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in rgb]


def _encode(
    stream: av.VideoStream, rgb: list[np.ndarray], pts: list[int] | None = None, setup: Callable[[av.VideoFrame], None] | None = None
) -> list[av.Packet]:
    packets: list[av.Packet] = []
    for i, img in enumerate(rgb):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=stream.pix_fmt)
        frame.pts = pts[i] if pts else i * int(1 / (FPS * stream.codec_context.time_base))
        frame.time_base = stream.codec_context.time_base
        if setup:
            setup(frame)
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def _interleave(out: av.container.OutputContainer, *lists: list[av.Packet]) -> None:
    """Mux packets of several streams in time order (by dts), like a camera writes them."""
    items = []
    for order, packets in enumerate(lists):
        for p in packets:
            t = (p.dts if p.dts is not None else p.pts or 0) * p.time_base
            items.append((t, order, p))
    items.sort(key=lambda x: (x[0], x[1]))
    for _, _, p in items:
        out.mux(p)


def _times(n: int, start: int = 0) -> tuple[Fraction, ...]:
    return tuple(Fraction(i, FPS) for i in range(start, start + n))


# -- makers: each writes ``path`` from ``rgb`` (RGB frames at FPS) and returns the expectation ---


def editlist_trim(path: Path, rgb: list[np.ndarray]) -> Expect:
    """An MP4 trimmed in place like a phone's "trim" does: an edit list hides the first 5 frames
    (decoded from the GOP's keyframe, never shown) and the last 4; the header still counts all."""
    head, tail = 5, 4
    n = len(rgb)
    with av.open(str(path), "w", format="mp4") as out:
        v = _video(out, "libx264", (rgb[0].shape[1], rgb[0].shape[0]), "yuv420p", {"bf": "2", "g": "50"}, Fraction(1, 12800))
        a = _add_audio(out, "aac")
        vp = _encode(v, rgb)
        ap = _audio_packets(a, _tone(n / FPS))
        step = 12800 // FPS
        for p in vp:  # shift so the 6th frame is at 0: the muxer writes an edit list starting there
            p.pts -= head * step
            p.dts -= head * step
        skip = head * AUDIO_RATE // FPS
        for p in ap:
            p.pts -= skip
            p.dts -= skip
        _interleave(out, vp, ap)
    shown = n - head - tail
    _patch_edit_durations(path, Fraction(shown, FPS))
    return Expect(
        frames=shown, times=_times(shown), width=rgb[0].shape[1], height=rgb[0].shape[0], audio_streams=1, header_frames=n, offset=head
    )


def _patch_edit_durations(path: Path, seconds: Fraction) -> None:
    """Shorten every edit list's segment to ``seconds`` (in the movie timescale), as an in-place
    trim of the end does; the samples stay in the file."""
    data = bytearray(path.read_bytes())
    mvhd = data.find(b"mvhd")
    version = data[mvhd + 4]
    scale_at = mvhd + 4 + 4 + (16 if version else 8)
    timescale = struct.unpack(">I", data[scale_at : scale_at + 4])[0]
    duration = int(seconds * timescale)
    pos = 0
    found = 0
    while (pos := data.find(b"elst", pos + 1)) != -1:
        ver = data[pos + 4]
        count = struct.unpack(">I", data[pos + 8 : pos + 12])[0]
        entry = pos + 12
        for _ in range(count):
            if ver:
                media_time = struct.unpack(">q", data[entry + 8 : entry + 16])[0]
                if media_time >= 0:
                    data[entry : entry + 8] = struct.pack(">Q", duration)
                entry += 20
            else:
                media_time = struct.unpack(">i", data[entry + 4 : entry + 8])[0]
                if media_time >= 0:
                    data[entry : entry + 4] = struct.pack(">I", duration)
                entry += 12
        found += 1
    if not found:
        raise RuntimeError(f"{path}: the muxer wrote no edit list")
    path.write_bytes(bytes(data))


def _write(
    path: Path,
    rgb: list[np.ndarray],
    fmt: str,
    codec: str,
    pix_fmt: str,
    options: dict[str, str],
    time_base: Fraction,
    audio: tuple[tuple[str, float, str | None], ...] = (("aac", 0.0, None),),
    size: tuple[int, int] | None = None,
    bit_rate: int | None = None,
    setup: Callable[[av.VideoStream], None] | None = None,
    mux_options: dict[str, str] | None = None,
    **expect: object,
) -> Expect:
    """Write one quirk file: the frames (resized to ``size``) as ``codec`` in ``fmt``, and one tone per
    ``audio`` entry (codec, seconds past the video's end, language); the Expect of a plain file."""
    frames = _frames(rgb, size) if size else rgb
    w, h = frames[0].shape[1], frames[0].shape[0]
    n = len(frames)
    with av.open(str(path), "w", format=fmt, options=mux_options) as out:
        v = _video(out, codec, (w, h), pix_fmt, options, time_base, bit_rate=bit_rate)
        if setup:
            setup(v)
        tracks = [(_add_audio(out, c, language=lang), extra, 440.0 + 220.0 * i) for i, (c, extra, lang) in enumerate(audio)]
        _interleave(out, _encode(v, frames), *(_audio_packets(a, _tone(n / FPS + extra, hz)) for a, extra, hz in tracks))
    fields: dict = {"frames": n, "times": _times(n), "width": w, "height": h, "audio_streams": len(audio), "pix_fmt": pix_fmt}
    fields.update(expect)
    return Expect(**fields)


NO_AUDIO: tuple[tuple[str, float, str | None], ...] = ()
PCM = (("pcm_s16le", 0.0, None),)


def bframes_negative(path: Path, rgb: list[np.ndarray]) -> Expect:
    """H.264 with B-frames in MP4 stored without an edit list and with signed composition offsets:
    decode timestamps start below zero, the first frame shows at 0."""
    opts = {"movflags": "negative_cts_offsets", "use_editlist": "0"}
    return _write(
        path, rgb, "mp4", "libx264", "yuv420p", {"bf": "3", "b_pyramid": "normal"}, Fraction(1, 12800), NO_AUDIO, mux_options=opts
    )


def open_gop(path: Path, rgb: list[np.ndarray]) -> Expect:
    """MPEG-TS with open GOPs (B-frames before each keyframe refer across it), as broadcast writes."""
    params = {"x264-params": "open-gop=1:keyint=12:min-keyint=12:bframes=3:scenecut=0"}
    return _write(path, rgb, "mpegts", "libx264", "yuv420p", params, Fraction(1, 90000))


def vfr(path: Path, rgb: list[np.ndarray]) -> Expect:
    """Matroska with variable frame durations (a phone dropping to 15 fps in low light)."""
    durations = [40 if i % 5 else 67 for i in range(len(rgb))]  # milliseconds
    pts = [sum(durations[:i]) for i in range(len(rgb))]
    with av.open(str(path), "w", format="matroska") as out:
        v = _video(out, "libx264", (rgb[0].shape[1], rgb[0].shape[0]), "yuv420p", {"bf": "2"}, Fraction(1, 1000))
        a = _add_audio(out, "aac")
        total = Fraction(pts[-1] + durations[-1], 1000)
        _interleave(out, _encode(v, rgb, pts), _audio_packets(a, _tone(float(total))))
    return Expect(
        frames=len(rgb), times=tuple(Fraction(p, 1000) for p in pts), width=rgb[0].shape[1], height=rgb[0].shape[0], audio_streams=1
    )


def odd_size(path: Path, rgb: list[np.ndarray]) -> Expect:
    """1279x719, as screen recorders and crops write (4:4:4 H.264; 4:2:0 cannot hold odd sizes)."""
    return _write(path, rgb, "mp4", "libx264", "yuv444p", {"crf": "20"}, Fraction(1, 12800), NO_AUDIO, size=(1279, 719))


def prores_10bit(path: Path, rgb: list[np.ndarray]) -> Expect:
    """10-bit 4:2:2 ProRes 422 HQ in MOV with PCM audio, as cameras and editors deliver."""
    return _write(path, rgb, "mov", "prores_ks", "yuv422p10le", {"profile": "3"}, Fraction(1, FPS), PCM)


# a typical HDR10 grade: P3 mastering display inside BT.2020, 1000 nits peak, MaxCLL 1000, MaxFALL 400
HDR10_X265 = (
    "log-level=error:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:hdr10=1:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400"
)
HDR_SIDE_DATA = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")
HDR_TAGS = {"color_primaries": 9, "color_trc": 16, "colorspace": 9}  # BT.2020, PQ (SMPTE 2084), BT.2020 NCL


def hevc_10bit_hdr(path: Path, rgb: list[np.ndarray]) -> Expect:
    """10-bit HEVC tagged HDR10 (BT.2020 primaries and matrix, PQ transfer, mastering display and
    content light level), as phones record HDR."""

    def tags(v: av.VideoStream) -> None:
        for k, val in HDR_TAGS.items():
            setattr(v.codec_context, k, val)

    params = {"x265-params": HDR10_X265}
    return _write(path, rgb, "mp4", "libx265", "yuv420p10le", params, Fraction(1, 12800), setup=tags, color=dict(HDR_TAGS))


def _fields(order: int, flags: int = 0) -> Callable[[av.VideoStream], None]:
    def setup(v: av.VideoStream) -> None:
        v.codec_context.field_order = order
        if flags:
            v.codec_context.flags = int(v.codec_context.flags) | flags

    return setup


def interlaced_mpeg2(path: Path, rgb: list[np.ndarray]) -> Expect:
    """Interlaced MPEG-2 in MPEG-TS, bottom field first (as FFmpeg's MPEG-2 encoder and DV write)."""
    bff = _fields(3)  # AV_FIELD_BB
    opts = {"flags": "+ildct+ilme"}
    return _write(path, rgb, "mpegts", "mpeg2video", "yuv420p", opts, Fraction(1, FPS), bit_rate=4_000_000, setup=bff, field_order="3")


def interlaced_h264(path: Path, rgb: list[np.ndarray]) -> Expect:
    """Interlaced (MBAFF) H.264 in Matroska, top field first, as HD broadcast cameras record."""
    tff = _fields(2, 262144 | 536870912)  # AV_FIELD_TT; interlaced DCT and ME
    opts = {"x264-params": "interlaced=1:tff=1"}
    return _write(path, rgb, "matroska", "libx264", "yuv420p", opts, Fraction(1, 1000), setup=tff, field_order="2")


def audio_longer(path: Path, rgb: list[np.ndarray]) -> Expect:
    """Audio running 1.5 s past the last frame (a recorder stopped after the camera)."""
    return _write(path, rgb, "mp4", "libx264", "yuv420p", {}, Fraction(1, 12800), (("aac", 1.5, None),))


def audio_shorter(path: Path, rgb: list[np.ndarray]) -> Expect:
    """Audio ending 0.8 s before the last frame (a recorder stopped before the camera): the decoder's
    last frames come with no audio packets between them."""
    return _write(path, rgb, "mp4", "libx264", "yuv420p", {}, Fraction(1, 12800), (("aac", -0.8, None),))


def two_audio(path: Path, rgb: list[np.ndarray]) -> Expect:
    """Two audio tracks (interview mic and room, two languages), both kept."""
    tracks = (("aac", 0.0, "eng"), ("libopus", 0.0, "fra"))
    return _write(path, rgb, "matroska", "libx264", "yuv420p", {}, Fraction(1, 1000), tracks)


def timecode(path: Path, rgb: list[np.ndarray]) -> Expect:
    """MOV with a start timecode track (tmcd) at 10:00:00:00, as cameras write for the edit."""

    def tc(v: av.VideoStream) -> None:
        v.metadata["timecode"] = "10:00:00:00"

    return _write(path, rgb, "mov", "libx264", "yuv420p", {}, Fraction(1, 12800), setup=tc, timecode="10:00:00:00")


def mxf_dnxhd(path: Path, rgb: list[np.ndarray]) -> Expect:
    """MXF (OP1a) with DNxHD 1280x720 at 90 Mb/s and PCM audio, as Avid ingest writes."""
    return _write(path, rgb, "mxf", "dnxhd", "yuv422p", {}, Fraction(1, FPS), PCM, size=(1280, 720), bit_rate=90_000_000)


def webm_vp9_opus(path: Path, rgb: list[np.ndarray]) -> Expect:
    """WebM with VP9 video and Opus audio, as browsers and web archives deliver."""
    opts = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    return _write(path, rgb, "webm", "libvpx-vp9", "yuv420p", opts, Fraction(1, 1000), (("libopus", 0.0, None),))


def avi_mjpeg(path: Path, rgb: list[np.ndarray]) -> Expect:
    """AVI with Motion JPEG and PCM audio, as older cameras and webcams write."""
    return _write(path, rgb, "avi", "mjpeg", "yuvj420p", {"q:v": "3"}, Fraction(1, FPS), PCM)


QUIRKS: dict[str, tuple[str, Callable[[Path, list[np.ndarray]], Expect]]] = {
    "editlist_trim": ("editlist_trim.mp4", editlist_trim),
    "bframes_negative_ts": ("bframes_negative_ts.mp4", bframes_negative),
    "open_gop": ("open_gop.ts", open_gop),
    "vfr": ("vfr.mkv", vfr),
    "odd_size_1279x719": ("odd_size.mp4", odd_size),
    "prores_422_10bit": ("prores_10bit.mov", prores_10bit),
    "hevc_10bit_hdr": ("hevc_hdr.mp4", hevc_10bit_hdr),
    "interlaced_mpeg2_bff": ("interlaced_mpeg2.ts", interlaced_mpeg2),
    "interlaced_h264_tff": ("interlaced_h264.mkv", interlaced_h264),
    "audio_longer": ("audio_longer.mp4", audio_longer),
    "audio_shorter": ("audio_shorter.mp4", audio_shorter),
    "two_audio_tracks": ("two_audio.mkv", two_audio),
    "timecode_track": ("timecode.mov", timecode),
    "mxf_dnxhd": ("dnxhd.mxf", mxf_dnxhd),
    "webm_vp9_opus": ("vp9_opus.webm", webm_vp9_opus),
    "avi_mjpeg": ("mjpeg.avi", avi_mjpeg),
}


@dataclass(frozen=True)
class Shown:
    """What a player shows of a file: frames with their times, size, rotation, audio and tags."""

    times: tuple[Fraction, ...]
    width: int
    height: int
    rotation: int
    pix_fmt: str
    color: dict[str, int]
    field_order: str | None
    timecode: str | None
    audio: tuple[bytes, ...]  # per audio stream: the packets' bytes, concatenated
    audio_seconds: tuple[Fraction, ...]  # where each audio stream ends, from the first frame
    header_frames: int
    hdr: dict[str, bytes]  # the first frame's HDR10 side data (mastering display, content light level)


def shown(path: Path) -> Shown:
    """Decode ``path`` as a player does (edit lists applied) and describe it."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        header = int(v.frames or 0)
        times: list[Fraction] = []
        first = None
        hdr: dict[str, bytes] = {}
        for frame in c.decode(v):
            if first is None:
                first = frame
                hdr = {k: v for k, v in ((str(sd.type).rsplit(".", 1)[-1], bytes(sd)) for sd in frame.side_data) if k in HDR_SIDE_DATA}
            times.append(Fraction(frame.pts) * Fraction(frame.time_base))
        cc = v.codec_context
        color = {k: int(getattr(cc, k)) for k in ("color_primaries", "color_trc", "colorspace")}
        field_order = getattr(cc, "field_order", None)
        start = Fraction(first.pts) * Fraction(first.time_base) if first is not None else Fraction(0)
        tc = v.metadata.get("timecode") or next((s.metadata.get("timecode") for s in c.streams if s.metadata.get("timecode")), None)
    audio: list[bytes] = []
    seconds: list[Fraction] = []
    with av.open(str(path)) as c:
        for s in c.streams.audio:
            data = b""
            end = Fraction(0)
            for p in c.demux(s):
                if p.size and not p.is_discard:
                    data += bytes(p)
                    if p.pts is not None and p.duration:
                        end = max(end, Fraction(p.pts + p.duration) * Fraction(p.time_base) - start)
            audio.append(data)
            seconds.append(end)
            c.seek(0)
    assert first is not None
    return Shown(
        times=tuple(t - times[0] for t in times) if times else (),
        width=first.width,
        height=first.height,
        rotation=int(first.rotation or 0),
        pix_fmt=first.format.name,
        color=color,
        field_order=str(field_order) if field_order is not None else None,
        timecode=tc,
        audio=tuple(audio),
        audio_seconds=tuple(seconds),
        header_frames=header,
        hdr=hdr,
    )
