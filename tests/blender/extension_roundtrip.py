"""Run inside the bpy venv: install the built extension zip, anonymize trimmed movie strips, print facts as JSON.

Usage: ``python extension_roundtrip.py ZIP CLI CLIP OUT_JSON``. BLENDER_USER_RESOURCES must point at
a scratch folder (set by the pytest caller) so nothing is installed into the real user profile.
The .blend is saved as ``project/edit.blend`` beside OUT_JSON (results go to ``project/deid/``),
after checking that an unsaved one is refused. The run is repeated with the anonymized copies
selected, as the first run leaves them: the copies must be replaced, not anonymized again.
The pytest side asserts on the JSON; this script only fails by itself when Blender raises.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import bpy

PKG = "bl_ext.user_default.deid_edit_vse"


def strips_of(editor: Any) -> Any:
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def facts(strip: Any) -> dict[str, Any]:
    return {
        "name": strip.name,
        "type": strip.type,
        "channel": strip.channel,
        "frame_start": strip.frame_start,
        "frame_offset_start": strip.frame_offset_start,
        "frame_offset_end": strip.frame_offset_end,
        "frame_final_start": strip.frame_final_start,
        "frame_final_end": strip.frame_final_end,
        "mute": strip.mute,
        "filepath": os.path.normpath(bpy.path.abspath(strip.filepath)) if hasattr(strip, "filepath") else None,
        "raw_filepath": getattr(strip, "filepath", None),
        "props": {k: strip.get(k) for k in ("deid_edit_source", "deid_edit_mode", "deid_edit_original") if strip.get(k) is not None},
    }


def main(zip_path: str, cli: str, clip: str, out_json: str) -> None:
    result: dict[str, Any] = {"blender": list(bpy.app.version)}
    install = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    result["install"] = sorted(install)
    result["enabled"] = PKG in bpy.context.preferences.addons
    result["installed_files"] = sorted(os.listdir(os.path.join(bpy.utils.user_resource("EXTENSIONS"), "user_default", "deid_edit_vse")))
    result["has_operator"] = hasattr(bpy.types, "SEQUENCER_OT_deid_anonymize")

    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.cli_path = cli
    prefs.default_mode = "pixelate"  # the operator's default mode is "use the preferences"; the output name proves it did

    scene = bpy.context.scene
    scene.render.fps = 25
    editor = scene.sequence_editor_create()
    strips = strips_of(editor)
    trimmed = strips.new_movie(name="trimmed", filepath=clip, channel=2, frame_start=10)
    trimmed.frame_offset_start = 5
    trimmed.frame_offset_end = 7
    blocked = strips.new_movie(name="blocked", filepath=clip, channel=2, frame_start=200)
    blocked.frame_offset_start = 3
    # something already sits one channel above "blocked" over its visible range: the copy must go one higher
    color = strips.new_effect(name="occupant", type="COLOR", channel=3, frame_start=210, length=20)
    bystander = strips.new_movie(name="bystander", filepath=clip, channel=5, frame_start=400)
    for strip in strips:
        strip.select = strip.name in ("trimmed", "blocked")
    before = {s.name for s in strips}
    result["originals_before"] = {s.name: facts(s) for s in (trimmed, blocked, bystander)}
    result["occupant"] = facts(color)

    # An unsaved .blend has no folder for the default //deid/: refused, nothing added.
    try:
        result["unsaved_run"] = sorted(bpy.ops.sequencer.deid_anonymize("EXEC_DEFAULT"))
        result["unsaved_message"] = None
    except RuntimeError as exc:
        result["unsaved_run"], result["unsaved_message"] = None, str(exc)
    result["unsaved_strip_count_delta"] = len(strips) - len(before)
    project = os.path.join(os.path.dirname(out_json), "project")
    os.makedirs(project)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "edit.blend"))
    deid = os.path.join(project, "deid")

    # The blocking path (what headless Blender and scripts use).
    result["run"] = sorted(bpy.ops.sequencer.deid_anonymize("EXEC_DEFAULT"))
    result["originals_after"] = {name: facts(strips[name]) for name in ("trimmed", "blocked", "bystander")}
    result["new"] = {s.name: facts(s) for s in strips if s.name not in before}
    result["active"] = editor.active_strip.name if editor.active_strip else None
    result["selected"] = sorted(s.name for s in strips if s.select)
    result["deid_files"] = sorted(os.listdir(deid))
    mtimes = {name: os.stat(os.path.join(deid, name)).st_mtime_ns for name in result["deid_files"]}

    # Again, with the anonymized copies selected (what the first run leaves selected).
    result["rerun"] = sorted(bpy.ops.sequencer.deid_anonymize("EXEC_DEFAULT"))
    result["rerun_strips"] = {s.name: facts(s) for s in strips}
    result["rerun_selected"] = sorted(s.name for s in strips if s.select)
    result["rerun_deid_files"] = sorted(os.listdir(deid))
    result["rerun_rewritten"] = {name: os.stat(os.path.join(deid, name)).st_mtime_ns != t for name, t in mtimes.items()}

    # A handled CLI error (missing --keep photo) must add nothing and mute nothing; INVOKE_DEFAULT runs execute() headless.
    for strip in strips:
        strip.select = strip.name == "bystander"
    count = len(strips)
    missing_photo = os.path.join(os.path.dirname(out_json), "nobody.jpg")
    try:  # an operator's ERROR report reaches a Python caller as RuntimeError carrying the message
        result["error_run"] = sorted(bpy.ops.sequencer.deid_anonymize("INVOKE_DEFAULT", keep_photo=missing_photo))
        result["error_message"] = None
    except RuntimeError as exc:
        result["error_run"] = None
        result["error_message"] = str(exc)
    result["error_strip_count_delta"] = len(strips) - count
    result["bystander_after_error"] = facts(strips["bystander"])

    with open(out_json, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
