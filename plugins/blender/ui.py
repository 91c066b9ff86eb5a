"""Preferences, per-scene settings and the Sequencer sidebar panel."""

from __future__ import annotations

from typing import Any

import bpy

from . import compat, operators, runner


class DeidEditPreferences(bpy.types.AddonPreferences):
    """Machine-specific settings: where the CLI lives differs per computer, so it is not stored in the .blend."""

    bl_idname = __package__

    cli_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="deid-edit Executable",
        description="Path to the deid-edit command, or just its name when it is on PATH",
        default="deid-edit",
        subtype="FILE_PATH",
    )
    default_mode: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Default Mode", items=[(m, m.capitalize(), f"Anonymize faces with {m}") for m in runner.MODES], default="blur"
    )
    mute_original: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Mute Original Strip", description="Mute the original strip once its anonymized copy is added above it", default=True
    )
    output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Output Folder",
        description=(
            "Where anonymized clips are written. Default //deid/: a deid folder beside the .blend (save the .blend first); "
            "an absolute folder also works for unsaved files. Empty means the default"
        ),
        default=operators.DEFAULT_OUTPUT_DIR,
        subtype="DIR_PATH",
    )

    def draw(self, context: Any) -> None:
        layout = self.layout
        layout.prop(self, "cli_path")
        layout.prop(self, "default_mode")
        layout.prop(self, "mute_original")
        layout.prop(self, "output_dir")


class DeidEditSceneSettings(bpy.types.PropertyGroup):
    """What the panel's button passes to the operator; saved with the .blend so a project keeps its choices."""

    mode: bpy.props.EnumProperty(name="Mode", items=operators.MODE_ITEMS, default="PREFERENCES")  # type: ignore[valid-type]
    keep_photo: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Keep", description="Photos of people NOT to anonymize (separate several with ;)", subtype="FILE_PATH"
    )
    only_photo: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Only", description="Anonymize only the people in these photos (separate several with ;)", subtype="FILE_PATH"
    )
    outputs: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Written Outputs",
        description="JSON {output: source} of the files this add-on wrote for this .blend; only these are ever overwritten",
        default="",
        options={"HIDDEN"},
    )


class SEQUENCER_PT_deid_edit(bpy.types.Panel):
    """Sidebar tab with the mode, the optional face photos, the button and the running job's progress."""

    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "De-identify"
    bl_label = "Anonymize Faces"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return compat.sequencer_scene(context) is not None

    def draw(self, context: Any) -> None:
        layout = self.layout
        scene = compat.sequencer_scene(context)
        settings = scene.deid_edit
        state = operators.STATE
        if state.running:
            if hasattr(layout, "progress"):
                layout.progress(factor=state.fraction, type="BAR", text=state.text)
            else:
                layout.label(text=f"{state.text} ({state.fraction:.0%})")
            layout.operator(operators.SEQUENCER_OT_deid_cancel.bl_idname, icon="CANCEL")
            return
        col = layout.column()
        col.prop(settings, "mode")
        col.prop(settings, "keep_photo")
        col.prop(settings, "only_photo")
        editor = scene.sequence_editor
        count = len(compat.selected_movie_strips(compat.editing_strips(editor))) if editor is not None else 0
        layout.label(text=f"{count} movie strip(s) selected", icon="SEQUENCE")
        folder = (operators.addon_prefs(context).output_dir or "").strip() or operators.DEFAULT_OUTPUT_DIR
        if folder.startswith("//") and not bpy.data.filepath:
            layout.label(text="Save the .blend first: results go to deid/ beside it", icon="ERROR")
        row = layout.row()
        row.enabled = count > 0
        op = row.operator(operators.SEQUENCER_OT_deid_anonymize.bl_idname, icon="HIDE_ON")
        op.mode = settings.mode
        op.keep_photo = settings.keep_photo
        op.only_photo = settings.only_photo


CLASSES = (DeidEditPreferences, DeidEditSceneSettings, SEQUENCER_PT_deid_edit)
