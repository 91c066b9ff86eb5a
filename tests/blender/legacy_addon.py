"""Run inside the bpy venv: enable the add-on the legacy way (bl_info, scripts/addons folder), print facts as JSON.

Usage: ``python legacy_addon.py CLIP OUT_JSON FAKE_CLI`` with BLENDER_USER_SCRIPTS pointing at a
folder whose ``addons/deid_edit_vse`` is a copy of plugins/blender (the pytest caller prepares it).
Checks registration, the user-facing errors, the modal path, and a clean disable.

Background Blender has no event loop (``invoke`` falls back to ``execute``, timers never fire), so
the modal path is driven by hand: the operator's own ``_start_modal``/``modal`` functions run on a
stand-in ``self`` with a stand-in window manager, fed TIMER and ESC events, against FAKE_CLI (a
script that speaks the CLI's JSON protocol: copies the clip, or hangs when asked for ``matte``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from types import SimpleNamespace
from typing import Any

import bpy

MODULE = "deid_edit_vse"


def run_op(**kwargs: Any) -> dict[str, Any]:
    """Call the operator and capture its outcome; an ERROR report arrives as RuntimeError."""
    try:
        return {"result": sorted(bpy.ops.sequencer.deid_anonymize("EXEC_DEFAULT", **kwargs)), "error": None}
    except RuntimeError as exc:
        return {"result": None, "error": str(exc)}


class FakeWindowManager:
    """Records the timer and modal handler the operator registers (a real one needs a window)."""

    def __init__(self) -> None:
        self.timers: list[object] = []
        self.handlers: list[object] = []

    def event_timer_add(self, step: float, window: object = None) -> object:
        timer = SimpleNamespace(step=step)
        self.timers.append(timer)
        return timer

    def event_timer_remove(self, timer: object) -> None:
        self.timers.remove(timer)

    def modal_handler_add(self, op: object) -> None:
        self.handlers.append(op)


def drive_modal(scene: Any, strips: Any, mode: str, esc_after_progress: bool) -> dict[str, Any]:
    """Run the operator's modal functions on a stand-in ``self``; ESC once progress shows, or tick to the end."""
    ops = sys.modules[f"{MODULE}.operators"]
    cls = ops.SEQUENCER_OT_deid_anonymize

    class Op:
        keep_photo = only_photo = ""

        def __init__(self) -> None:
            self.mode = mode
            self.reports: list[tuple[list[str], str]] = []

        def report(self, level: set[str], message: str) -> None:
            self.reports.append((sorted(level), message))

    for name in ("_prepare", "_on_result", "_collection_of", "_finish", "_start_modal", "modal", "_end", "_cleanup", "_set_status"):
        setattr(Op, name, cls.__dict__[name])
    op, wm = Op(), FakeWindowManager()
    context = SimpleNamespace(preferences=bpy.context.preferences, scene=scene, window_manager=wm, window=object(), workspace=None)
    before = {s.name for s in strips}
    out: dict[str, Any] = {"start": sorted(op._start_modal(context)), "timers_while_running": len(wm.timers)}
    out["handler_is_op"] = wm.handlers == [op]
    out["running_flag"] = ops.STATE.running
    out["mouse_move"] = sorted(op.modal(context, SimpleNamespace(type="MOUSEMOVE")))
    pid = op._batch.job.pid if op._batch.job else None
    fractions: list[float] = []
    ret: set[str] = {"PASS_THROUGH"}
    deadline = time.monotonic() + 60
    while ret == {"PASS_THROUGH"} and time.monotonic() < deadline:
        if op._batch.job is not None:
            pid = op._batch.job.pid
        event = "ESC" if esc_after_progress and op._batch.stage else "TIMER"
        ret = op.modal(context, SimpleNamespace(type=event))
        fractions.append(ops.STATE.fraction)
        time.sleep(0.02)
    try:
        os.kill(pid, 0)
        out["child_alive"] = True
    except (ProcessLookupError, TypeError):
        out["child_alive"] = False
    out.update(
        end=sorted(ret),
        fractions=fractions,
        timers_after=len(wm.timers),
        running_after=ops.STATE.running,
        reports=op.reports,
        new={
            s.name: [s.channel, s.frame_final_start, s.frame_final_end, os.path.basename(s.filepath)]
            for s in strips
            if s.name not in before
        },
        original_mute=strips["clip"].mute,
        original_range=[strips["clip"].channel, strips["clip"].frame_final_start, strips["clip"].frame_final_end],
    )
    return out


def main(clip: str, out_json: str, fake_cli: str) -> None:
    import addon_utils  # only importable once bpy has put Blender's scripts/modules on sys.path

    result: dict[str, Any] = {"blender": list(bpy.app.version)}
    module = addon_utils.enable(MODULE, default_set=True, handle_error=None)
    result["module_file"] = getattr(module, "__file__", None)
    result["bl_info_name"] = getattr(module, "bl_info", {}).get("name")
    result["enabled"] = MODULE in bpy.context.preferences.addons
    result["has_operator"] = hasattr(bpy.types, "SEQUENCER_OT_deid_anonymize")
    result["has_panel"] = hasattr(bpy.types, "SEQUENCER_PT_deid_edit")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    result["prefs"] = {"cli_path": prefs.cli_path, "default_mode": prefs.default_mode, "mute_original": prefs.mute_original}

    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    strip = strips.new_movie(name="clip", filepath=clip, channel=1, frame_start=1)
    result["scene_settings_mode"] = scene.deid_edit.mode

    strip.select = False
    result["nothing_selected"] = run_op()
    strip.select = True
    prefs.cli_path = "/nonexistent/deid-edit"
    result["missing_cli"] = run_op()
    result["strip_count"] = len(strips)
    result["mute_after_errors"] = strip.mute

    prefs.cli_path = fake_cli
    result["modal_finish"] = drive_modal(scene, strips, "solid", esc_after_progress=False)
    strips["clip"].mute, strips["clip"].select = False, True
    result["modal_cancel"] = drive_modal(scene, strips, "matte", esc_after_progress=True)

    addon_utils.disable(MODULE, default_set=True)
    result["disabled_has_operator"] = hasattr(bpy.types, "SEQUENCER_OT_deid_anonymize")
    result["disabled_has_scene_prop"] = hasattr(bpy.types.Scene, "deid_edit")
    with open(out_json, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
