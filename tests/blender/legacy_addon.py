"""Run inside the bpy venv: enable the add-on the legacy way (bl_info, scripts/addons folder), print facts as JSON.

Usage: ``python legacy_addon.py CLIP OUT_JSON FAKE_CLI`` with BLENDER_USER_SCRIPTS pointing at a
folder whose ``addons/deid_edit_vse`` is a copy of plugins/blender (the pytest caller prepares it),
and DEID_FAKE_LOG naming the file where FAKE_CLI appends each argv it gets.
Checks registration, the user-facing errors, the output folder preference, the re-run rules
(an anonymized copy is never anonymized again; a re-run replaces the previous copy and overwrites
only its own file), the modal path with Esc, the Cancel button and other keys, and a clean disable.

Background Blender has no event loop (``invoke`` falls back to ``execute``, timers never fire), so
the modal path is driven by hand: the operator's own ``_start_modal``/``modal`` functions run on a
stand-in ``self`` with a stand-in window manager, fed TIMER, key and ESC events, against FAKE_CLI (a
script that speaks the CLI's JSON protocol: copies the clip, hangs when asked for ``matte``, and,
like the real CLI, refuses to replace an existing output without ``--force``). The blocking path
runs on the same stand-in so its reports (INFO/WARNING as well as ERROR) can be read.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import types
from types import SimpleNamespace
from typing import Any

import bpy

MODULE = "deid_edit_vse"
PROPS = ("deid_edit_source", "deid_edit_mode", "deid_edit_original")


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


def make_op(scene: Any, mode: str) -> tuple[Any, Any]:
    """The operator's own functions on a stand-in ``self`` (reports kept), and a context with a fake window manager."""
    cls = sys.modules[f"{MODULE}.operators"].SEQUENCER_OT_deid_anonymize

    class Op:
        keep_photo = only_photo = ""

        def __init__(self) -> None:
            self.mode = mode
            self.reports: list[tuple[list[str], str]] = []

        def report(self, level: set[str], message: str) -> None:
            self.reports.append((sorted(level), message))

    for name, value in cls.__dict__.items():
        if isinstance(value, types.FunctionType | staticmethod) and not name.startswith("__"):
            setattr(Op, name, value)
    wm = FakeWindowManager()
    context = SimpleNamespace(preferences=bpy.context.preferences, scene=scene, window_manager=wm, window=object(), workspace=None)
    return Op(), context


def snapshot(strips: Any) -> dict[str, Any]:
    """Every strip: [channel, start, end, file name, mute, select, custom properties]."""
    return {
        s.name: [
            s.channel,
            s.frame_final_start,
            s.frame_final_end,
            os.path.basename(s.filepath) if hasattr(s, "filepath") else None,
            s.mute,
            s.select,
            {k: s.get(k) for k in PROPS if s.get(k) is not None},
        ]
        for s in strips
    }


def fake_calls() -> list[list[str]]:
    path = os.environ["DEID_FAKE_LOG"]
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def select_only(strips: Any, *names: str) -> None:
    for s in strips:
        s.select = s.name in names


def run_blocking(scene: Any, strips: Any, mode: str, out_dir: str) -> dict[str, Any]:
    """The blocking path (``execute``) on the stand-in: result, reports, strips and files after, CLI calls made."""
    calls_before = len(fake_calls())
    op, context = make_op(scene, mode)
    result = sorted(op.execute(context))
    return {
        "result": result,
        "reports": op.reports,
        "strips": snapshot(strips),
        "files": sorted(os.listdir(out_dir)),
        "calls": fake_calls()[calls_before:],
    }


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid, 0)  # type: ignore[arg-type]
    except (ProcessLookupError, TypeError):
        return False
    return True


def drive_modal(scene: Any, strips: Any, mode: str, esc_after_progress: bool) -> dict[str, Any]:
    """Run the operator's modal functions; ESC once progress shows (after other keys, which must pass), or tick to the end."""
    ops = sys.modules[f"{MODULE}.operators"]
    op, context = make_op(scene, mode)
    wm = context.window_manager
    before = {s.name for s in strips}
    out: dict[str, Any] = {"start": sorted(op._start_modal(context)), "timers_while_running": len(wm.timers)}
    out["handler_is_op"] = wm.handlers == [op]
    out["running_flag"] = ops.STATE.running
    out["mouse_move"] = sorted(op.modal(context, SimpleNamespace(type="MOUSEMOVE", value="NOTHING")))
    pid = op._batch.job.pid if op._batch.job else None
    fractions: list[float] = []
    ret: set[str] = {"PASS_THROUGH"}
    deadline = time.monotonic() + 60
    while ret == {"PASS_THROUGH"} and time.monotonic() < deadline:
        if op._batch.job is not None:
            pid = op._batch.job.pid
        if esc_after_progress and op._batch.stage:
            # Other keys while the job runs go on to Blender and leave the job alone; Esc's release is
            # swallowed without cancelling; Esc's press cancels and is not passed on.
            keys = {}
            for key, value in (("A", "PRESS"), ("SPACE", "PRESS"), ("RET", "PRESS"), ("ESC", "RELEASE")):
                keys[f"{key} {value}"] = sorted(op.modal(context, SimpleNamespace(type=key, value=value)))
            out["other_keys"] = keys
            out["alive_after_other_keys"] = _alive(pid) and ops.STATE.running
            ret = op.modal(context, SimpleNamespace(type="ESC", value="PRESS"))
            break
        ret = op.modal(context, SimpleNamespace(type="TIMER", value="NOTHING"))
        fractions.append(ops.STATE.fraction)
        time.sleep(0.02)
    out["child_alive"] = _alive(pid)
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


def drive_cancel_button(scene: Any, strips: Any) -> dict[str, Any]:
    """The panel's Cancel button (``sequencer.deid_cancel``) while a job hangs: the next tick ends it and kills the child."""
    ops = sys.modules[f"{MODULE}.operators"]
    op, context = make_op(scene, "matte")
    out: dict[str, Any] = {"start": sorted(op._start_modal(context))}
    deadline = time.monotonic() + 30
    while not op._batch.stage and time.monotonic() < deadline:
        op.modal(context, SimpleNamespace(type="TIMER", value="NOTHING"))
        time.sleep(0.02)
    pid = op._batch.job.pid if op._batch.job else None
    out["button"] = sorted(bpy.ops.sequencer.deid_cancel())
    out["alive_after_button"] = _alive(pid)  # the click only asks; the modal tick does the work
    out["end"] = sorted(op.modal(context, SimpleNamespace(type="TIMER", value="NOTHING")))
    out["child_alive"] = _alive(pid)
    out["running_after"] = ops.STATE.running
    out["timers_after"] = len(context.window_manager.timers)
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
    result["prefs"] = {
        "cli_path": prefs.cli_path,
        "default_mode": prefs.default_mode,
        "mute_original": prefs.mute_original,
        "output_dir": prefs.output_dir,
    }

    scene = bpy.context.scene
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    strip = strips.new_movie(name="clip", filepath=clip, channel=1, frame_start=1)
    result["scene_settings_mode"] = scene.deid_edit.mode

    strip.select = False
    result["nothing_selected"] = run_op()
    strip.select = True
    result["unsaved_default_folder"] = run_op()  # the .blend was never saved: //deid/ has no folder
    out_dir = os.path.join(os.path.dirname(out_json), "out")
    prefs.output_dir = out_dir  # an absolute folder works for an unsaved .blend
    prefs.cli_path = "/nonexistent/deid-edit"
    result["missing_cli"] = run_op()
    result["strip_count"] = len(strips)
    result["mute_after_errors"] = strip.mute

    # A file that is not ours already has the first-choice name: it must survive, the result gets -2.
    os.makedirs(out_dir, exist_ok=True)
    foreign = os.path.join(out_dir, "clip.deid-solid.mp4")
    with open(foreign, "wb") as fh:
        fh.write(b"the editor's own file")
    prefs.cli_path = fake_cli
    result["modal_finish"] = drive_modal(scene, strips, "solid", esc_after_progress=False)
    result["calls_first"] = fake_calls()
    result["after_first"] = snapshot(strips)

    # Re-run with the anonymized copy selected (as the first run leaves it): its original is used,
    # the copy is replaced (one copy, no clip.deid.deid) and its own file is overwritten (--force).
    result["rerun_same_mode"] = run_blocking(scene, strips, "solid", out_dir)
    # Again from the copy, another mode: a second copy for that mode; the solid one stays.
    result["rerun_other_mode"] = run_blocking(scene, strips, "pixelate", out_dir)
    # A strip showing a deid-edit output whose original is not in the timeline: skipped, the CLI never runs.
    loose = os.path.join(os.path.dirname(out_json), "loose")
    os.makedirs(loose, exist_ok=True)
    shutil.copy(clip, os.path.join(loose, "interview.deid-blur.mp4"))
    strips.new_movie(name="stray", filepath=os.path.join(loose, "interview.deid-blur.mp4"), channel=7, frame_start=500)
    select_only(strips, "stray")
    result["orphan_copy"] = run_blocking(scene, strips, "blur", out_dir)
    with open(foreign, "rb") as fh:
        result["foreign_after"] = fh.read().decode()
    result["ledger"] = json.loads(scene.deid_edit.outputs)

    select_only(strips, "clip")
    strips["clip"].mute = False
    result["modal_cancel"] = drive_modal(scene, strips, "matte", esc_after_progress=True)
    select_only(strips, "clip")
    result["cancel_button"] = drive_cancel_button(scene, strips)
    result["files_at_end"] = sorted(os.listdir(out_dir))

    addon_utils.disable(MODULE, default_set=True)
    result["disabled_has_operator"] = hasattr(bpy.types, "SEQUENCER_OT_deid_anonymize")
    result["disabled_has_scene_prop"] = hasattr(bpy.types.Scene, "deid_edit")
    with open(out_json, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
