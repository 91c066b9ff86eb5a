"""The few Sequencer API differences between Blender 4.2 and 4.4+/5.x, in one place.

Blender 4.4 renamed ``sequences``/``sequences_all`` to ``strips``/``strips_all`` (and 5.0 removed the
old names); 5.0 can edit a scene other than the active one (``context.sequencer_scene``). This
module only duck-types the objects it is given, so it imports nothing from ``bpy`` and the strip
placement rules, and the rules that recognise an anonymized copy and find its original and its
predecessor, can be tested without Blender.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

MAX_CHANNEL = 128

# Custom properties the add-on sets on every strip it adds, so a later run knows the strip is an
# anonymized copy (never to be anonymized again), which original and source it stands for, and in
# which mode; a copy duplicated by the user keeps them. Without them (copies made by an older
# version, or properties cleared) the output naming is the fallback: see ``is_output``.
PROP_SOURCE = "deid_edit_source"
PROP_MODE = "deid_edit_mode"
PROP_ORIGINAL = "deid_edit_original"
OUTPUT_STEM = re.compile(r"\.deid-(?P<mode>blur|pixelate|solid|matte)(?:-\d+)?$")
"""File stems the add-on (and the Resolve script) write: ``clip.deid-blur``, ``clip.deid-blur-2``."""
COPY_NAME = re.compile(r"\.deid(?:-(?:blur|pixelate|solid|matte))?(?:\.\d{3})?$")
"""Strip names the add-on gives its copies: ``clip.deid-blur`` (``clip.deid`` in earlier versions), ``.001`` after Blender's renaming."""

# Properties that decide what the viewer shows of a strip, copied so the anonymized copy covers the
# original exactly (same crop, transform, blend, colour); missing ones are skipped.
LOOK_PROPERTIES: tuple[str, ...] = (
    "blend_type",
    "blend_alpha",
    "use_flip_x",
    "use_flip_y",
    "use_reverse_frames",
    "color_saturation",
    "color_multiply",
    "strobe",
    "use_deinterlace",
    "alpha_mode",
)
TRANSFORM_PROPERTIES: tuple[str, ...] = ("offset_x", "offset_y", "scale_x", "scale_y", "rotation", "origin", "filter")
CROP_PROPERTIES: tuple[str, ...] = ("min_x", "max_x", "min_y", "max_y")


def strips(container: Any) -> Any:
    """The strip collection of a sequence editor or meta strip (``strips`` in 4.4+, ``sequences`` before)."""
    return container.strips if hasattr(container, "strips") else container.sequences


def strips_all(editor: Any) -> Any:
    """Every strip, including those inside meta strips."""
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def sequencer_scene(context: Any) -> Any:
    """The scene the Sequencer edits: ``context.sequencer_scene`` in 5.x when set, else the active scene."""
    return getattr(context, "sequencer_scene", None) or context.scene


def editing_strips(editor: Any) -> Any:
    """The collection shown in the timeline: the innermost open meta strip's, or the top level."""
    stack = getattr(editor, "meta_stack", None)
    if stack is not None and len(stack):
        return strips(stack[-1])
    return strips(editor)


def selected_movie_strips(collection: Iterable[Any]) -> list[Any]:
    """Selected movie strips of one collection, in channel then time order (a stable, visible order)."""
    found = [s for s in collection if getattr(s, "type", "") == "MOVIE" and getattr(s, "select", False)]
    return sorted(found, key=lambda s: (s.channel, s.frame_final_start))


def overlaps(strip: Any, channel: int, start: int, end: int) -> bool:
    """Whether ``strip`` occupies ``channel`` anywhere in the half-open frame range [start, end)."""
    return strip.channel == channel and strip.frame_final_start < end and start < strip.frame_final_end


def free_channel(collection: Iterable[Any], lowest: int, start: int, end: int, ignore: Any = None) -> int | None:
    """The lowest channel >= ``lowest`` with no strip in [start, end), or None when all are taken.

    Blender moves a strip that lands on an occupied range ("shuffle"), so the add-on picks a free
    channel itself and can tell the user where the result went.
    """
    existing = [s for s in collection if ignore is None or s != ignore]
    for channel in range(max(lowest, 1), MAX_CHANNEL + 1):
        if not any(overlaps(s, channel, start, end) for s in existing):
            return channel
    return None


def _copy_attrs(src: Any, dst: Any, names: Iterable[str]) -> None:
    for name in names:
        if not hasattr(src, name) or not hasattr(dst, name):
            continue
        value = getattr(src, name)
        try:
            if hasattr(value, "__len__") and not isinstance(value, str):
                setattr(dst, name, tuple(value))
            else:
                setattr(dst, name, value)
        except (AttributeError, TypeError, ValueError):
            pass  # read-only or version-specific; the look is a courtesy, the timing is what matters


def copy_look(src: Any, dst: Any) -> None:
    """Copy crop, transform and blend settings so the anonymized strip covers the original exactly."""
    _copy_attrs(src, dst, LOOK_PROPERTIES)
    if hasattr(src, "transform") and hasattr(dst, "transform"):
        _copy_attrs(src.transform, dst.transform, TRANSFORM_PROPERTIES)
    if hasattr(src, "crop") and hasattr(dst, "crop"):
        _copy_attrs(src.crop, dst.crop, CROP_PROPERTIES)


def add_movie_above(collection: Any, original: Any, filepath: str, name: str) -> Any:
    """Add ``filepath`` as a movie strip above ``original`` with the same frame_start and offsets.

    The new strip is first created on a channel that is free for its whole untrimmed length (so
    Blender does not shuffle it), trimmed to the original's offsets, then moved to the lowest free
    channel above the original for the visible range: one channel up unless that is taken there.
    """
    start, end = original.frame_final_start, original.frame_final_end
    target = free_channel(collection, original.channel + 1, start, end)
    if target is None:
        raise ValueError(f"no free channel above {original.name!r} for frames {start}-{end}")
    untrimmed_end = original.frame_start + max(original.frame_duration, end - original.frame_start)
    parking = free_channel(collection, target, min(start, original.frame_start), max(end, untrimmed_end))
    if parking is None:
        raise ValueError(f"no free channel to place the anonymized copy of {original.name!r}")
    strip = collection.new_movie(name=name, filepath=filepath, channel=parking, frame_start=round(original.frame_start))
    strip.frame_offset_start = original.frame_offset_start
    # Blender counts the frames an MP4 edit list hides (a phone's in-place trim) as its own last
    # frames; the render has only those a player shows. The copy holds its last frame over the
    # difference, so it covers the original's whole visible range frame for frame.
    shorter = max(0, original.frame_duration - strip.frame_duration)
    strip.frame_offset_end = original.frame_offset_end - shorter
    if strip.frame_start != original.frame_start:
        strip.frame_start = original.frame_start
    if strip.channel != target:
        strip.channel = target
    copy_look(original, strip)
    return strip


# -- anonymized copies: recognise them, map them back, find the previous one ----------------------


def get_prop(strip: Any, key: str) -> Any:
    """A custom property of ``strip`` (``strip.get(key)`` on Blender strips), None when absent or unsupported."""
    try:
        return strip.get(key)
    except (AttributeError, TypeError):
        return None


def mark_output(strip: Any, source: str, mode: str, original_name: str) -> None:
    """Tag a strip the add-on added as an anonymized copy of ``original_name`` (``source`` in ``mode``)."""
    strip[PROP_SOURCE] = source
    strip[PROP_MODE] = mode
    strip[PROP_ORIGINAL] = original_name


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def is_output(strip: Any, abspath: Callable[[str], str], folders: Collection[str] = ()) -> bool:
    """Whether ``strip`` shows a deid-edit result rather than original footage.

    In order: the add-on's custom property; a file named like an output (``*.deid-<mode>[-N].*``);
    a strip named like an added copy (``*.deid-blur``, ``*.deid``, ``*.deid-blur.001``); a file inside one of ``folders``
    (the default ``deid/`` folder beside the .blend, which only the add-on writes into). A folder the
    user chose in the preferences is not used as a sign: it may well be the footage folder.
    """
    if get_prop(strip, PROP_SOURCE):
        return True
    if COPY_NAME.search(getattr(strip, "name", "")):
        return True
    path = getattr(strip, "filepath", "")
    if not path:
        return False
    full = abspath(path)
    return bool(OUTPUT_STEM.search(_stem(full))) or os.path.dirname(full) in folders


def find_original(collection: Iterable[Any], copy: Any, abspath: Callable[[str], str], folders: Collection[str] = ()) -> Any:
    """The original movie strip an anonymized ``copy`` was made from, or None when it is gone.

    The name recorded on the copy wins when that strip still shows the recorded source; otherwise
    (renamed original, copy without properties) the original is the non-output strip below the
    copy that covers exactly the same frames and shows the recorded source, or, without a recorded
    source, whose file or strip name is the copy's without the ``.deid…`` suffix.
    """
    candidates = [s for s in collection if getattr(s, "type", "") == "MOVIE" and s != copy and not is_output(s, abspath, folders)]
    name, source = get_prop(copy, PROP_ORIGINAL), get_prop(copy, PROP_SOURCE)
    if name:
        for strip in candidates:
            if strip.name == name and (not source or abspath(strip.filepath) == source):
                return strip
    span = (copy.frame_final_start, copy.frame_final_end)
    below = [s for s in candidates if (s.frame_final_start, s.frame_final_end) == span and s.channel < copy.channel]
    if source:
        found = [s for s in below if abspath(s.filepath) == source]
    else:
        base_name, base_stem = COPY_NAME.sub("", copy.name), OUTPUT_STEM.sub("", _stem(abspath(copy.filepath)))
        found = [s for s in below if s.name == base_name or _stem(abspath(s.filepath)) == base_stem]
    return max(found, key=lambda s: s.channel) if found else None


def previous_copies(collection: Iterable[Any], original: Any, source: str, mode: str, abspath: Callable[[str], str]) -> list[Any]:
    """The anonymized copies of ``original`` in ``mode`` that a new run replaces.

    A copy belongs to the original whose name it recorded, or (original renamed since) to the
    original it sits above over exactly the same frames; it must show ``source`` in ``mode``.
    Copies of another mode are kept: blur and solid versions may be wanted side by side. A copy
    made before the properties existed counts when its name, file name and frames say so.
    """
    span = (original.frame_final_start, original.frame_final_end)
    found = []
    for strip in collection:
        if strip == original or getattr(strip, "type", "") != "MOVIE":
            continue
        same_span = (strip.frame_final_start, strip.frame_final_end) == span and strip.channel > original.channel
        if get_prop(strip, PROP_SOURCE):
            ours = get_prop(strip, PROP_SOURCE) == source and get_prop(strip, PROP_MODE) == mode
            if ours and (get_prop(strip, PROP_ORIGINAL) == original.name or same_span):
                found.append(strip)
        elif same_span and COPY_NAME.sub("", strip.name) == original.name:
            stem = _stem(abspath(strip.filepath))
            match = OUTPUT_STEM.search(stem)
            if match and match.group("mode") == mode and OUTPUT_STEM.sub("", stem) == _stem(source):
                found.append(strip)
    return found
