"""What an output may say about where, when, with what and by whom it was filmed.

Input: a source or output file. Output: the policy ``encode.VideoWriter`` follows (next stage),
``removed_by_default`` (what the default drops from an input; the plan records it) and ``findings``
(what an output still carries outside the policy; ``deid-edit audit`` fails on any). Why: a hidden
face does not protect a source whose GPS, device or date travel in the file. Kept by default: picture
geometry and colour, each stream's ``language``, the video's start ``timecode`` (editors need it; the
summary names it). Everything else (tags, chapters, attachments, data, timed-metadata and subtitle
streams) is left behind unless ``--keep-metadata``. FFmpeg's own muxer entries are not findings.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

KEPT_STREAM_TAGS = frozenset({"language"})
KEPT_VIDEO_TAGS = frozenset({"language", "timecode"})
# written by FFmpeg's muxers themselves, whatever the source said
_MUXER_HANDLERS = frozenset({"VideoHandler", "SoundHandler", "SubtitleHandler", "DataHandler", "TimeCodeHandler"})
_MUXER_VENDORS = frozenset({"FFMP", "[0][0][0][0]"})
COPIED_STREAM_TYPES = ("audio",)  # other than the video, by default


def _muxer_tag(key: str, value: str, scope: str) -> bool:
    """An entry FFmpeg's muxer writes on its own (not copied from any source)."""
    k = key.lower()
    if scope == "container":
        return k in ("major_brand", "minor_version", "compatible_brands") or k == "encoder" and value.startswith("Lav")
    if k == "handler_name":
        return value in _MUXER_HANDLERS
    if k == "vendor_id":
        return value in _MUXER_VENDORS
    if k == "encoder":
        return value.startswith("Lav")
    return k == "duration" and key.isupper()  # Matroska's per-stream DURATION


def _allowed_stream_tag(key: str, value: str, kind: str) -> bool:
    allowed = KEPT_VIDEO_TAGS if kind == "video" else KEPT_STREAM_TAGS
    return key.lower() in allowed or _muxer_tag(key, value, "stream")


def _inventory(container: av.container.InputContainer, source: bool) -> list[str]:
    """What ``container`` carries outside the policy: for a source, what the default removes; for
    an output, what it should not have kept. One short phrase per item."""
    out = []
    for key, value in container.metadata.items():
        if not _muxer_tag(key, str(value), "container"):
            out.append(f"tag {key}")
    first_video = container.streams.video[0].index if container.streams.video else -1
    for s in container.streams:
        kind = s.type
        if kind == "video" and s.index == first_video or kind in COPIED_STREAM_TYPES:
            for key, value in s.metadata.items():
                if not _allowed_stream_tag(key, str(value), kind):
                    out.append(f"stream #{s.index} ({kind}) tag {key}")
        elif kind == "data" and _is_timecode_track(s) and not source:
            continue  # the muxer's own tmcd track, written from the kept start timecode
        else:
            lang = s.metadata.get("language")
            codec = s.codec_context.name if s.codec_context is not None else None
            name = s.metadata.get("filename") if kind == "attachment" else None
            detail = ", ".join(x for x in (codec, lang, name) if x and x != "und")
            out.append(f"{kind} stream #{s.index}" + (f" ({detail})" if detail else ""))
    chapters = _chapters(container)
    if chapters:
        out.append(f"{len(chapters)} chapter(s)")
    return out


def _is_timecode_track(s: av.stream.Stream) -> bool:
    tag = getattr(s, "codec_tag", "") or ""
    return tag == "tmcd" or s.metadata.get("handler_name") == "TimeCodeHandler"


def _chapters(container: av.container.Container) -> list[dict[str, object]]:
    try:
        return list(container.chapters())
    except (AttributeError, av.FFmpegError):
        return []


def removed_by_default(path: str | os.PathLike[str]) -> list[str]:
    """What the default output leaves out of this input (the plan and the run summary say it)."""
    with av.open(str(path), metadata_errors="ignore") as c:
        return _inventory(c, source=True)


def findings(path: str | os.PathLike[str]) -> list[str]:
    """What an output carries that could locate or identify its source (empty: nothing)."""
    with av.open(str(Path(path)), metadata_errors="ignore") as c:
        return _inventory(c, source=False)
