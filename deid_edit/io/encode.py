"""Encoding: anonymized frames and copied packets in, the output file out. Previous stage: render.

``VideoWriter`` writes to a temporary file beside the target and renames it only on success, so
the final path never holds a half-written video. It keeps what an editor relies on: coded size,
every frame's pts (VFR stays VFR), rotation, aspect ratio, colour tags, field order, timecode, and
the audio as a bit-exact packet copy; nothing that could locate or identify the source
(``io.metadata``) unless ``--keep-metadata`` asks for it. The encoder and its options come from
``io.codecs``. ``io.threaded.ThreadedWriter`` runs a writer's calls in order on one background
thread, so render does not wait for colour conversion, encoding and muxing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from av.codec.context import Flags as CodecFlags
from av.video.frame import PictureType

from ..config import EncodeConfig
from ..errors import EncodeError
from ..types import VideoInfo
from .alloc import fix_mmap_threshold
from .codecs import container_format, hdr10_x265_params, resolve_codec
from .metadata import COPIED_STREAM_TYPES, KEPT_STREAM_TAGS, KEPT_VIDEO_TAGS

if TYPE_CHECKING:
    from .threaded import ThreadedWriter

log = logging.getLogger(__name__)

PROGRESSIVE = 1  # AVFieldOrder: 1 progressive; 2-5 interlaced (TT, BB, TB, BT)
INTERLACED_FIELD_ORDERS = {2, 3, 4, 5}
BOTTOM_FIRST = {3, 5}


# tags the MOV/MP4 muxer writes in its own atoms (ffmpeg movenc: udta/ilst), plus the brands it sets itself
_MOV_NATIVE_TAGS = frozenset(
    [
        "title",
        "author",
        "artist",
        "album_artist",
        "composer",
        "album",
        "date",
        "comment",
        "genre",
        "copyright",
        "grouping",
        "lyrics",
        "description",
        "synopsis",
        "show",
        "episode_id",
        "network",
        "keywords",
        "location",
        "creation_time",
        "encoder",
        "track",
        "disc",
        "compilation",
        "major_brand",
        "minor_version",
        "compatible_brands",
    ]
)


def _umask() -> int:
    """The process umask (read once, at import, while nothing else runs: reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


def temp_path_for(target: Path) -> Path:
    """A unique temporary path beside ``target`` (same filesystem, so rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(fd)
    return Path(tmp)


class VideoWriter:
    """Writes one output video mirroring ``source`` (an open input container)."""

    def __init__(
        self,
        target: str | os.PathLike[str],
        source: av.container.InputContainer,
        info: VideoInfo,
        cfg: EncodeConfig,
        copy_other_streams: bool = True,
    ) -> None:
        self.target = Path(target)
        self.tmp = temp_path_for(self.target)
        self.info = info
        self.keep_metadata = cfg.keep_metadata
        self._closed = False
        src_v = source.streams.video[0]
        fmt = container_format(self.target)
        try:
            # keys the MOV/MP4 muxer has no atom for (com.apple.quicktime.*, make, model) it writes
            # only as mdta keys, with use_metadata_tags
            dns = cfg.keep_metadata and fmt in ("mov", "mp4") and any(k not in _MOV_NATIVE_TAGS for k in source.metadata)
            self.out = av.open(str(self.tmp), mode="w", format=fmt, options={"movflags": "use_metadata_tags"} if dns else None)
        except av.FFmpegError as exc:
            self._discard()
            raise EncodeError(f"{self.target}: cannot create output ({exc}); check the folder") from exc
        try:
            self.codec, self.pix_fmt, options = resolve_codec(cfg, info, self.out.format.name)
            if cfg.keep_metadata:
                self.out.metadata.update({k: v for k, v in source.metadata.items() if k != "encoder"})
            self.video = self._add_video(src_v, options)
            self.stream_map: dict[int, av.stream.Stream] = {}
            if copy_other_streams:
                self._add_copies(source)
        except BaseException:
            self.abort()
            raise

    # -- set-up -------------------------------------------------------------------------------
    def _add_video(self, src_v: av.video.stream.VideoStream, options: dict[str, str]) -> av.video.stream.VideoStream:
        info = self.info
        stream = self.out.add_stream(self.codec, rate=info.avg_rate)
        stream.width = info.coded_width
        stream.height = info.coded_height
        stream.pix_fmt = self.pix_fmt
        stream.time_base = info.time_base
        cc = stream.codec_context
        cc.time_base = info.time_base
        src_cc = src_v.codec_context
        for attr in ("color_range", "color_primaries", "color_trc", "colorspace"):
            try:
                setattr(cc, attr, getattr(src_cc, attr))
            except (AttributeError, TypeError, ValueError):
                log.debug("cannot copy %s", attr)
        if src_v.sample_aspect_ratio:
            cc.sample_aspect_ratio = src_v.sample_aspect_ratio
        # interlaced footage stays interlaced, fields in the source's order: deinterlacing or a
        # progressive re-encode would change every frame of a broadcast master
        field_order = int(getattr(src_cc, "field_order", 0) or 0)
        if field_order in INTERLACED_FIELD_ORDERS:
            cc.field_order = field_order
            cc.flags = int(cc.flags) | int(CodecFlags.interlaced_dct) | int(CodecFlags.interlaced_me)
            if self.codec == "libx264":
                fields = "interlaced=1:" + ("bff=1" if field_order in BOTTOM_FIRST else "tff=1")
                params = options.get("x264-params")
                options["x264-params"] = f"{params}:{fields}" if params else fields
            elif self.codec == "libx265":
                log.warning("%s: interlaced source; HEVC has no interlaced coding here, fields are coded as frames", info.path)
        elif field_order == PROGRESSIVE:
            cc.field_order = field_order
        if self.codec == "dnxhd" and "profile" not in options:
            self._match_dnxhd(src_v, cc, options)
        if self.codec == "libx265":
            hdr = hdr10_x265_params(src_v)
            if hdr:
                options["x265-params"] = f"{options['x265-params']}:{hdr}" if options.get("x265-params") else hdr
        cc.options = options
        cc.thread_type = "AUTO"
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        # "timecode": the source's start timecode; MOV/MP4 muxers write it as a tmcd track, which
        # editors need to place the render where the original sits (and the OTIO hand-off reads)
        for key, value in src_v.metadata.items():
            if key in KEPT_VIDEO_TAGS or self.keep_metadata and key != "encoder":
                stream.metadata[key] = value
        return stream

    def _match_dnxhd(self, src_v: av.video.stream.VideoStream, cc: av.VideoCodecContext, options: dict[str, str]) -> None:
        """Re-encode DNxHD/DNxHR as the source was: the same DNxHR profile, or for DNxHD (a fixed
        set of size/rate/bit-rate combinations) the source's bit rate, read from a frame's size
        because MXF and MOV headers often leave it out."""
        profile = (src_v.codec_context.profile or "").lower().replace(" ", "_")
        if profile.startswith("dnxhr"):
            options["profile"] = profile
            return
        container = src_v.container
        size = 0
        try:
            for packet in container.demux(src_v):
                if packet.size:
                    size = packet.size
                    break
            container.seek(0)
        except av.FFmpegError:
            log.debug("cannot read a DNxHD frame size", exc_info=True)
        if not size:
            return
        # a frame holds the nominal rate plus padding: take the highest nominal rate at or below it
        # that DNxHD defines for this size, rate and depth (the encoder refuses any other)
        measured = int(size * 8 * float(self.info.avg_rate) / 1e6)
        for mbps in range(measured, int(measured * 0.75), -1):
            trial = av.CodecContext.create("dnxhd", "w")
            trial.width, trial.height, trial.pix_fmt = cc.width, cc.height, self.pix_fmt
            trial.time_base = Fraction(1, round(float(self.info.avg_rate))) if self.info.avg_rate else Fraction(1, 25)
            trial.bit_rate = mbps * 1_000_000
            try:
                trial.open()
            except (av.FFmpegError, ValueError):
                continue
            cc.bit_rate = trial.bit_rate
            return
        log.warning(
            "%s: no DNxHD bit rate fits %d Mb/s at %dx%d; the encoder will refuse it (use --codec dnxhr)",
            self.info.path,
            measured,
            cc.width,
            cc.height,
        )

    def _add_copies(self, source: av.container.InputContainer) -> None:
        """Copy the audio (and with ``keep_metadata`` every other stream, chapter and attachment the
        output container accepts); warn about the rest."""
        for s in source.streams:
            if s.type == "video" and s.index == source.streams.video[0].index:
                continue
            if not self.keep_metadata and s.type not in COPIED_STREAM_TYPES:
                log.info(
                    "%s: %s stream #%d left out (it can locate or name people; --keep-metadata copies it)", self.info.path, s.type, s.index
                )
                continue
            if s.type == "attachment" and isinstance(s, av.stream.AttachmentStream):
                self.out.add_attachment(s.name or f"attachment{s.index}", s.mimetype or "application/octet-stream", bytes(s.data))
                continue
            if s.type not in ("audio", "subtitle", "data") or s.codec_context is None and s.type != "data":
                log.warning("%s: stream #%d (%s) is not copied", self.info.path, s.index, s.type)
                continue
            bare = s.type == "data" and (s.codec_context is None or s.codec_context.name in (None, "none"))
            if bare and self.out.format.name != "mpegts":  # only MPEG-TS carries codec-less data (KLV, telemetry)
                log.info("%s: data stream #%d has no codec the output can carry (only .ts can); skipped", self.info.path, s.index)
                continue
            try:
                out_s = self.out.add_stream_from_template(s)
                out_s.metadata.update(s.metadata if self.keep_metadata else {k: v for k, v in s.metadata.items() if k in KEPT_STREAM_TAGS})
                self.stream_map[s.index] = out_s
            except (av.FFmpegError, ValueError, TypeError) as exc:
                log.warning("%s: stream #%d (%s) cannot be copied to %s: %s", self.info.path, s.index, s.type, self.target.suffix, exc)
        if self.keep_metadata:
            try:
                chapters = list(source.chapters())
                if chapters:
                    self.out.set_chapters(chapters)
            except (AttributeError, av.FFmpegError, ValueError) as exc:
                log.warning("%s: chapters cannot be copied to %s: %s", self.info.path, self.target.suffix, exc)
        try:
            self.out.start_encoding()
        except av.FFmpegError as exc:
            # the container refused a copied stream: retry with audio only, which every video
            # container we write accepts, and say what was dropped
            dropped = [i for i, s in self.stream_map.items() if s.type != "audio"]
            if not dropped:
                raise EncodeError(f"{self.target}: cannot write header ({exc}); try another container (.mp4/.mov/.mkv)") from exc
            log.warning("%s: streams %s cannot be stored in %s; they are dropped", self.info.path, dropped, self.target.suffix)
            raise _RetryWithoutStreams(dropped) from exc

    @property
    def copied_streams(self) -> tuple[int, ...]:
        """Input stream indices whose packets ``copy`` accepts."""
        return tuple(self.stream_map)

    # -- writing ------------------------------------------------------------------------------
    def write_array(self, rgb: np.ndarray, pts: int | None, time_base: Fraction, like: av.VideoFrame | None = None) -> None:
        """Encode a coded-orientation RGB frame at ``pts``.

        With ``like`` (the decoded frame the picture came from) the pixels are written back into it,
        so it keeps every property of the source frame: interlacing and field order, HDR side data
        (mastering display, content light level), colour tags, bit depth.
        """
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        cs = like.colorspace if like is not None else None
        cr = like.color_range if like is not None else None
        if like is not None and like.format.name == self.pix_fmt and (like.width, like.height) == (frame.width, frame.height):
            converted = frame.reformat(format=like.format.name, dst_colorspace=cs or None, dst_color_range=cr or None)
            # the decoder may still read this picture as a reference (and decode ahead on its own
            # thread): write into a private copy of its buffers, never into the decoder's
            like.make_writable()
            for dst, src in zip(like.planes, converted.planes):
                rows = min(dst.height, src.height)
                n = min(dst.line_size, src.line_size)
                d = np.asarray(memoryview(dst)).reshape(dst.height, dst.line_size)
                d[:rows, :n] = np.asarray(memoryview(src)).reshape(src.height, src.line_size)[:rows, :n]
            frame = like
            frame.pict_type = PictureType.NONE
        else:
            frame = frame.reformat(format=self.pix_fmt, dst_colorspace=cs or None, dst_color_range=cr or None)
        frame.pts = pts
        frame.time_base = time_base
        self._encode(frame)

    def write_frame(self, frame: av.VideoFrame) -> None:
        """Encode a decoded frame unchanged (no RGB round trip: exact colours, less time)."""
        pts, tb = frame.pts, frame.time_base
        if frame.format.name != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt)
            frame.pts, frame.time_base = pts, tb
        frame.pict_type = PictureType.NONE  # let the encoder choose keyframes
        self._encode(frame)

    def _encode(self, frame: av.VideoFrame | None) -> None:
        try:
            for packet in self.video.encode(frame):
                self.out.mux(packet)
        except av.FFmpegError as exc:
            raise EncodeError(f"{self.target}: encoding failed ({exc}); try another --codec") from exc

    def copy(self, packet: av.Packet) -> None:
        """Mux a packet of a copied stream unchanged (bit-exact audio)."""
        if self.route(packet):
            self.mux_copied(packet)

    def route(self, packet: av.Packet) -> bool:
        """Point ``packet`` at its output stream; False when its stream is not copied.

        Separate from ``mux_copied`` because it reads the packet's *input* stream, which the
        reader's container frees when it closes: ``ThreadedWriter`` routes on the caller's thread,
        while that container is surely open, and muxes later on its own.
        """
        out_s = self.stream_map.get(packet.stream.index)
        if out_s is None:
            return False
        packet.stream = out_s
        return True

    def mux_copied(self, packet: av.Packet) -> None:
        """Mux a packet already routed by ``route``."""
        try:
            self.out.mux(packet)
        except av.FFmpegError as exc:
            raise EncodeError(f"{self.target}: writing stream #{packet.stream.index} failed ({exc})") from exc

    def finish(self) -> Path:
        """Flush, close and move the temporary file to the target."""
        try:
            self._encode(None)
            self.out.close()
        except av.FFmpegError as exc:
            self.abort()
            raise EncodeError(f"{self.target}: finishing the file failed ({exc}); check free disk space") from exc
        self._closed = True
        os.chmod(self.tmp, 0o666 & ~UMASK)  # mkstemp made it private; the output is readable like any new file
        os.replace(self.tmp, self.target)
        return self.target

    def abort(self) -> None:
        """Close and delete the temporary file; the target is never touched."""
        if not self._closed:
            self._closed = True
            try:
                self.out.close()
            except Exception:  # closing a broken container can fail; the file goes anyway
                log.debug("close failed during abort", exc_info=True)
        self._discard()

    def _discard(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


class _RetryWithoutStreams(Exception):
    def __init__(self, dropped: list[int]) -> None:
        super().__init__(dropped)
        self.dropped = dropped


def open_writer(
    target: Path, source: av.container.InputContainer, info: VideoInfo, cfg: EncodeConfig, threaded: bool = False
) -> VideoWriter | ThreadedWriter:
    """A VideoWriter, retrying without the side streams the container refuses; with ``threaded``,
    wrapped in a ``ThreadedWriter`` so encoding overlaps the caller's work."""
    fix_mmap_threshold()  # before the encoder allocates: the same frames give the same file (io.alloc)
    try:
        writer = VideoWriter(target, source, info, cfg)
    except _RetryWithoutStreams:
        writer = VideoWriter(target, source, info, cfg, copy_other_streams=False)
        for s in source.streams.audio:
            out_s = writer.out.add_stream_from_template(s)
            out_s.metadata.update(s.metadata if cfg.keep_metadata else {k: v for k, v in s.metadata.items() if k in KEPT_STREAM_TAGS})
            writer.stream_map[s.index] = out_s
    if not threaded:
        return writer
    from .threaded import ThreadedWriter  # the module builds on VideoWriter, so imported here

    return ThreadedWriter(writer)
