"""Which encoder, pixel format and options an output gets, and what the source's headers carry over.

Input: ``--codec``/``--crf``/``--preset`` (``EncodeConfig``), the source's ``VideoInfo`` and the
output's extension. Output: the encoder name, pixel format and options for ``io.encode``, or a
``ConfigError`` before any work (an encoder that is missing, not for video, hardware that is not
there, an edit codec in a container that cannot hold it). Why separate: ``run`` checks the choice
before analyzing, and the writer only carries it out. HDR10 static metadata is read here into x265's
parameters, so a phone's HDR clip comes back mastered as it was.
"""

from __future__ import annotations

import logging
import struct
from fractions import Fraction
from pathlib import Path

import av

from ..config import EncodeConfig
from ..errors import ConfigError
from ..types import VideoInfo

log = logging.getLogger(__name__)

# decoder name -> software encoder that writes the same format
SAME_CODEC = {
    "h264": "libx264",
    "hevc": "libx265",
    "vp9": "libvpx-vp9",
    "vp8": "libvpx",
    "av1": "libsvtav1",
    "mpeg4": "mpeg4",
    "prores": "prores_ks",
    "dnxhd": "dnxhd",
    "mjpeg": "mjpeg",
    "ffv1": "ffv1",
}
# what users type -> (encoder, pix_fmt or None, options)
CODEC_ALIASES: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "h264": ("libx264", None, {}),
    "x264": ("libx264", None, {}),
    "hevc": ("libx265", None, {}),
    "h265": ("libx265", None, {}),
    "prores": ("prores_ks", "yuv422p10le", {"profile": "3"}),  # ProRes 422 HQ
    "prores4444": ("prores_ks", "yuv444p10le", {"profile": "4"}),
    "dnxhr": ("dnxhd", "yuv422p", {"profile": "dnxhr_hq"}),
    "dnxhr_hqx": ("dnxhd", "yuv422p10le", {"profile": "dnxhr_hqx"}),
}
EDIT_CODECS = {"prores_ks", "dnxhd"}
EDIT_CONTAINERS = {"mov", "mxf", "matroska"}
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 28}


# Encoders that run on a GPU or media engine: FFmpeg lists them whether or not the hardware and its
# driver are present, so they are opened once up front to fail before the analysis, with advice.
HARDWARE_ENCODER_HINTS = {
    "nvenc": "an NVIDIA GPU with its driver",
    "qsv": "an Intel GPU with Quick Sync and its media driver",
    "vaapi": "a VA-API device (/dev/dri) and its driver",
    "videotoolbox": "macOS VideoToolbox",
    "amf": "an AMD GPU with its AMF driver",
}


def check_hardware_encoder(name: str, pix_fmt: str | None = None) -> None:
    """``ConfigError`` unless the hardware encoder ``name`` really opens on this machine."""
    need = next((hint for key, hint in HARDWARE_ENCODER_HINTS.items() if key in name), None)
    if need is None:
        return
    try:
        cc = av.CodecContext.create(name, "w")
        cc.width, cc.height = 256, 256
        cc.pix_fmt = pix_fmt or "yuv420p"
        cc.time_base = Fraction(1, 25)
        cc.open()
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise ConfigError(
            f"--codec {name} cannot start here ({exc}): it needs {need}; use --codec h264 or hevc (software) instead"
        ) from exc


def check_codec(cfg: EncodeConfig) -> av.codec.Codec | None:
    """The encoder ``--codec`` asks for, checked to exist, be a video encoder and (for hardware
    encoders) really open here; None without ``--codec``. Cheap: ``run`` calls it before analyzing."""
    if not cfg.codec:
        return None
    name, pix_fmt, _ = CODEC_ALIASES.get(cfg.codec, (cfg.codec, None, {}))
    try:
        codec = av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise ConfigError(
            f"--codec {cfg.codec!r} is not an available encoder; use h264, hevc, prores, dnxhr or another FFmpeg encoder name"
        ) from exc
    if codec.type != "video":
        raise ConfigError(f"--codec {cfg.codec!r} is not a video encoder; use h264, hevc, prores or dnxhr")
    check_hardware_encoder(name, pix_fmt)
    return codec


def resolve_codec(cfg: EncodeConfig, info: VideoInfo, muxer: str) -> tuple[str, str, dict[str, str]]:
    """Choose encoder, pixel format and options; ``ConfigError`` for an impossible choice."""
    if cfg.codec:
        name, pix_fmt, options = CODEC_ALIASES.get(cfg.codec, (cfg.codec, None, {}))
        codec = check_codec(cfg)
    else:
        name, pix_fmt, options = SAME_CODEC.get(info.codec, "libx264"), None, {}
        try:
            codec = av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError):
            name, codec = "libx264", av.codec.Codec("libx264", "w")
    formats = [f.name for f in (codec.video_formats or [])]
    if pix_fmt is None:
        src = info.pix_fmt.replace("yuvj", "yuv")
        pix_fmt = src if (not formats or src in formats) else ("yuv420p" if "yuv420p" in formats else formats[0])
    options = dict(options)
    if name in EDIT_CODECS and not (set(muxer.split(",")) & EDIT_CONTAINERS):
        raise ConfigError(f"--codec {cfg.codec or name!r} needs a .mov or .mxf output, not {muxer}")
    crf = cfg.crf if cfg.crf is not None else DEFAULT_CRF.get(name)
    if crf is not None and name in DEFAULT_CRF:
        options["crf"] = str(crf)
        if name == "libvpx-vp9":
            options["b"] = "0"
    if cfg.preset:
        options["preset"] = cfg.preset
    if name == "libx265":
        options.setdefault("x265-params", "log-level=error")
    return name, pix_fmt, options


def _read_q(data: bytes, at: int) -> float:
    num, den = struct.unpack_from("<ii", data, at)
    return num / den if den else 0.0


def hdr10_x265_params(src_v: av.video.stream.VideoStream) -> str:
    """x265 parameters that carry the source's HDR10 static metadata (mastering display colour
    volume, content light level) into the re-encode; "" when the first frame has none.

    Without them an HDR10 phone clip comes back with its colour tags but no mastering display,
    and players tone-map it as if mastered at an unknown peak: visibly brighter or duller.
    """
    container = src_v.container
    side: dict[str, bytes] = {}
    try:
        for frame in container.decode(src_v):
            side = {str(sd.type).rsplit(".", 1)[-1]: bytes(sd) for sd in frame.side_data}
            break
        container.seek(0)
    except av.FFmpegError:
        log.debug("cannot read the first frame's side data", exc_info=True)
        return ""
    params = []
    md = side.get("MASTERING_DISPLAY_METADATA")
    if md is not None and len(md) >= 88:
        has_primaries, has_luminance = struct.unpack_from("<ii", md, 80)
        if has_primaries and has_luminance:
            r, g, b, wp = ((_read_q(md, at), _read_q(md, at + 8)) for at in (0, 16, 32, 48))
            lmin, lmax = _read_q(md, 64), _read_q(md, 72)

            def xy(p: tuple[float, float]) -> str:
                return f"({round(p[0] * 50000)},{round(p[1] * 50000)})"

            params.append(f"master-display=G{xy(g)}B{xy(b)}R{xy(r)}WP{xy(wp)}L({round(lmax * 10000)},{round(lmin * 10000)})")
    cll = side.get("CONTENT_LIGHT_LEVEL")
    if cll is not None and len(cll) >= 8:
        max_cll, max_fall = struct.unpack_from("<II", cll, 0)
        params.append(f"max-cll={max_cll},{max_fall}")
    if params:
        params.append("hdr10=1")
    return ":".join(params)


OUTPUT_FORMATS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".mxf": "mxf",
    ".avi": "avi",
    ".ts": "mpegts",
}


def container_format(target: Path) -> str:
    """The muxer for the target's extension; an unknown extension is a ConfigError naming it."""
    ext = target.suffix.lower()
    if ext in OUTPUT_FORMATS:
        return OUTPUT_FORMATS[ext]
    raise ConfigError(f"output {target}: unknown extension {ext!r}; use .mp4, .mov, .mkv, .webm, .mxf, .avi or .ts")
