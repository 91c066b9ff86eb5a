"""The Sequencer operators: anonymize the selected movie strips, and cancel a running job.

``execute()`` is the blocking path (headless Blender, scripts, and ``INVOKE_DEFAULT`` in background
mode, where timers never fire); ``invoke()`` starts the same ``runner.Batch`` and a window-manager
timer whose ``modal()`` ticks advance it, so the UI stays responsive and Esc kills the child. All
``bpy`` access happens on the main thread; the runner's reader threads only fill a queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import bpy

from . import compat, runner

MODE_ITEMS = [("PREFERENCES", "Preferences Default", "Use the default mode from the add-on preferences")] + [
    (m, m.capitalize(), f"Anonymize faces with {m}") for m in runner.MODES
]


@dataclass
class UiState:
    """What the panel draws while a modal run is going; module-level so drawing never writes ID data."""

    running: bool = False
    fraction: float = 0.0
    text: str = ""
    cancel_requested: bool = False


STATE = UiState()


@dataclass
class _DefaultPrefs:
    """Used when the add-on was registered without Blender's add-on system (a bare ``register()``)."""

    cli_path: str = "deid-edit"
    default_mode: str = "blur"
    mute_original: bool = True
    output_dir: str = ""


def addon_prefs(context: Any) -> Any:
    """This add-on's preferences, found under its package name (``bl_ext.<repo>.deid_edit_vse`` or the legacy folder name)."""
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None and addon.preferences is not None else _DefaultPrefs()


def _abspath(path: str) -> str:
    """Absolute, normalised file-system path of a Blender path (``//`` is relative to the .blend)."""
    return os.path.normpath(os.path.abspath(bpy.path.abspath(path)))


def _split_paths(text: str) -> list[str]:
    return [_abspath(p.strip()) for p in text.split(";") if p.strip()]


def _redraw_sequencers() -> None:
    wm = bpy.context.window_manager
    for window in wm.windows if wm else ():
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()


class SEQUENCER_OT_deid_anonymize(bpy.types.Operator):
    """Anonymize every face in the selected movie strips with deid-edit; the result goes one channel above"""

    bl_idname = "sequencer.deid_anonymize"
    bl_label = "Anonymize Faces"
    bl_options = {"REGISTER", "UNDO"}

    mode: bpy.props.EnumProperty(name="Mode", items=MODE_ITEMS, default="PREFERENCES")  # type: ignore[valid-type]
    keep_photo: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Keep", description="Photos of people NOT to anonymize (separate several with ;)", subtype="FILE_PATH"
    )
    only_photo: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Only", description="Anonymize only the people in these photos (separate several with ;)", subtype="FILE_PATH"
    )

    @classmethod
    def poll(cls, context: Any) -> bool:
        scene = compat.sequencer_scene(context)
        return scene is not None and scene.sequence_editor is not None and not STATE.running

    # -- shared set-up and result handling -------------------------------------------------------

    def _prepare(self, context: Any) -> runner.Batch | None:
        """Build the batch for the selected strips, or report why not and return None."""
        prefs = addon_prefs(context)
        self._scene_name = compat.sequencer_scene(context).name
        self._mute = bool(prefs.mute_original)
        self._added: list[str] = []
        self._errors: list[str] = []
        self._resolved_mode = prefs.default_mode if self.mode == "PREFERENCES" else self.mode
        editor = compat.sequencer_scene(context).sequence_editor
        selected = compat.selected_movie_strips(compat.editing_strips(editor))
        if not selected:
            self.report({"ERROR"}, "Select one or more movie strips to anonymize")
            return None
        try:
            cli = runner.resolve_cli(bpy.path.abspath(prefs.cli_path) if prefs.cli_path.startswith("//") else prefs.cli_path)
        except runner.RunnerError as exc:
            self.report({"ERROR"}, str(exc))
            return None
        out_dir = _abspath(prefs.output_dir) if prefs.output_dir.strip() else None
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        tasks: dict[str, runner.Task] = {}
        for strip in selected:  # strips sharing a file share one CLI run
            source = _abspath(strip.filepath)
            task = tasks.get(source)
            if task is None:
                task = tasks[source] = runner.Task(source, str(runner.output_path(source, self._resolved_mode, out_dir)), key=[])
            task.key.append(strip.name)
        keep, only = _split_paths(self.keep_photo), _split_paths(self.only_photo)
        mode = self._resolved_mode

        def argv_for(task: runner.Task) -> list[str]:
            return runner.build_command(cli, task.source, task.output, mode, keep, only)

        return runner.Batch(list(tasks.values()), argv_for, on_result=self._on_result)

    def _on_result(self, task: runner.Task, result: runner.Result) -> None:
        """Called on the main thread when one clip's run ends: add the strips or record the error."""
        if result.cancelled:
            return
        label = os.path.basename(task.source)
        if not result.ok:
            self._errors.append(f"{label}: {result.message}")
            self.report({"ERROR"}, f"deid-edit failed on {label}: {result.message}")
            return
        scene = bpy.data.scenes.get(self._scene_name)
        editor = scene.sequence_editor if scene is not None else None
        if editor is None:
            self._errors.append(f"{label}: the scene or its sequence editor is gone")
            return
        output = result.output or task.output
        sheet = result.summary.get("kept_sheet")
        if sheet:  # --keep/--only: who is NOT anonymized must be seen before publishing
            self.report({"WARNING"}, f"{label}: faces left visible on purpose are shown in {sheet}; check it before publishing")
        for name in task.key:
            original = compat.strips_all(editor).get(name)
            if original is None:  # deleted or renamed while the CLI ran
                self._errors.append(f"{name}: strip no longer exists; result left at {output}")
                continue
            collection = self._collection_of(editor, original)
            path = bpy.path.relpath(output) if original.filepath.startswith("//") and bpy.data.filepath else output
            try:
                new = compat.add_movie_above(collection, original, path, f"{original.name}.deid")
            except (ValueError, RuntimeError) as exc:
                self._errors.append(f"{name}: {exc}")
                self.report({"ERROR"}, f"Could not add the anonymized strip for {name}: {exc}")
                continue
            if new.channel != original.channel + 1:
                self.report({"INFO"}, f"{new.name}: channel {original.channel + 1} is taken there, placed on channel {new.channel}")
            if (new.frame_final_start, new.frame_final_end) != (original.frame_final_start, original.frame_final_end):
                self.report({"WARNING"}, f"{new.name}: the anonymized clip's length differs; check its range")
            if self._mute:
                original.mute = True
            original.select = False
            new.select = True
            editor.active_strip = new
            self._added.append(new.name)

    @staticmethod
    def _collection_of(editor: Any, strip: Any) -> Any:
        """The collection holding ``strip`` (top level or a meta strip's), where its sibling must go."""
        top = compat.strips(editor)
        if top.get(strip.name) is not None:
            return top
        for meta in compat.strips_all(editor):
            if meta.type == "META" and compat.strips(meta).get(strip.name) is not None:
                return compat.strips(meta)
        return top

    def _finish(self, batch: runner.Batch) -> set[str]:
        if batch.cancelled:
            self.report({"WARNING"}, f"Cancelled; {len(self._added)} strip(s) added before cancelling")
        elif self._added:
            level = {"WARNING"} if self._errors else {"INFO"}
            self.report(level, f"Added {len(self._added)} anonymized strip(s): {', '.join(self._added)}")
        return {"FINISHED"} if self._added else {"CANCELLED"}

    # -- blocking path ---------------------------------------------------------------------------

    def execute(self, context: Any) -> set[str]:
        batch = self._prepare(context)
        if batch is None:
            return {"CANCELLED"}
        batch.run()
        return self._finish(batch)

    # -- modal path ------------------------------------------------------------------------------

    def invoke(self, context: Any, event: Any) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)  # no event loop: timers would never fire
        return self._start_modal(context)

    def _start_modal(self, context: Any) -> set[str]:
        """Start the batch and the timer whose ticks ``modal()`` turns into ``Batch.step()`` calls."""
        batch = self._prepare(context)
        if batch is None:
            return {"CANCELLED"}
        self._batch = batch
        STATE.running, STATE.fraction, STATE.text, STATE.cancel_requested = True, 0.0, "starting", False
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        self._set_status(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: Any, event: Any) -> set[str]:
        if event.type == "ESC" or STATE.cancel_requested:
            self._batch.cancel()
            return self._end(context)
        if event.type == "TIMER":
            try:
                self._batch.step()
            except Exception as exc:  # never leave a child, a timer and the panel's "running" state behind
                self._batch.cancel()
                self._cleanup(context)
                self.report({"ERROR"}, f"deid-edit add-on failed: {type(exc).__name__}: {exc}")
                return {"CANCELLED"}
            STATE.fraction, STATE.text = self._batch.fraction, self._batch.status_text()
            self._set_status(context)
            _redraw_sequencers()
            if self._batch.finished:
                return self._end(context)
        return {"PASS_THROUGH"}

    def cancel(self, context: Any) -> None:
        """Blender calls this when the modal operator is torn down (file load, quit): never leave the child running."""
        if getattr(self, "_batch", None) is not None and not self._batch.finished:
            self._batch.cancel()
        self._cleanup(context)

    def _end(self, context: Any) -> set[str]:
        self._cleanup(context)
        return self._finish(self._batch)

    def _cleanup(self, context: Any) -> None:
        if getattr(self, "_timer", None) is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        STATE.running, STATE.cancel_requested = False, False
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _redraw_sequencers()

    def _set_status(self, context: Any) -> None:
        if context.workspace is not None:
            context.workspace.status_text_set(f"deid-edit: {STATE.text} ({STATE.fraction:.0%}) - Esc to cancel")


class SEQUENCER_OT_deid_cancel(bpy.types.Operator):
    """Stop the running deid-edit job (kills the CLI; finished clips stay in the timeline)"""

    bl_idname = "sequencer.deid_cancel"
    bl_label = "Cancel Anonymizing"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return STATE.running

    def execute(self, context: Any) -> set[str]:
        STATE.cancel_requested = True  # the modal operator kills the child on its next tick
        return {"FINISHED"}


CLASSES = (SEQUENCER_OT_deid_anonymize, SEQUENCER_OT_deid_cancel)
