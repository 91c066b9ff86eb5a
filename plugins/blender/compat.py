"""The few Sequencer API differences between Blender 4.2 and 4.4+/5.x, in one place.

Blender 4.4 renamed ``sequences``/``sequences_all`` to ``strips``/``strips_all`` (and 5.0 removed the
old names); 5.0 can edit a scene other than the active one (``context.sequencer_scene``). This
module only duck-types the objects it is given, so it imports nothing from ``bpy`` and the strip
placement rules can be tested without Blender.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_CHANNEL = 128

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
    strip.frame_offset_end = original.frame_offset_end
    if strip.frame_start != original.frame_start:
        strip.frame_start = original.frame_start
    if strip.channel != target:
        strip.channel = target
    copy_look(original, strip)
    return strip
