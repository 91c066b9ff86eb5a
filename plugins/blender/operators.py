"""The Sequencer operators: anonymize the selected movie strips, and cancel a running job.

``execute()`` is the blocking path (headless Blender, scripts, and ``INVOKE_DEFAULT`` in background
mode, where timers never fire); ``invoke()`` starts the same ``runner.Batch`` and a window-manager
timer whose ``modal()`` ticks advance it, so the UI stays responsive and Esc kills the child. All
``bpy`` access happens on the main thread; the runner's reader threads only fill a queue.

Rules an editor relies on: a selected strip that is itself an anonymized copy is never anonymized
again (its original is used, or it is skipped with a report); a new run on the same original and
mode replaces the previous copy in the timeline and, only when that file is this project's own
earlier output, overwrites it; results go to ``deid/`` beside the .blend unless the preferences
name another folder.
"""

from __future__ import annotations

import json
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
    output_dir: str = "//deid/"


DEFAULT_OUTPUT_DIR = "//deid/"
"""Results go to a ``deid`` folder beside the .blend unless the preferences name another folder."""

UNSAVED_MESSAGE = (
    "Save the .blend file first: anonymized clips go to a deid/ folder beside it "
    "(or set an absolute Output Folder in the add-on preferences)"
)


def addon_prefs(context: Any) -> Any:
    """This add-on's preferences, found under its package name (``bl_ext.<repo>.deid_edit_vse`` or the legacy folder name)."""
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None and addon.preferences is not None else _DefaultPrefs()


def _abspath(path: str) -> str:
    """Absolute, normalised file-system path of a Blender path (``//`` is relative to the .blend)."""
    return os.path.normpath(os.path.abspath(bpy.path.abspath(path)))


def _split_paths(text: str) -> list[str]:
    return [_abspath(p.strip()) for p in text.split(";") if p.strip()]


def output_folder(prefs: Any) -> str:
    """Absolute output folder from the preferences (empty: ``//deid/``); RunnerError when it needs an unsaved .blend.

    A ``//`` path means "beside the .blend": an unsaved file has no folder, and writing into the
    footage folder instead would put derived files on camera cards or shared media volumes, so the
    user is asked to save (or to pick an absolute folder) rather than guessed for.
    """
    folder = (prefs.output_dir or "").strip() or DEFAULT_OUTPUT_DIR
    if folder.startswith("//") and not bpy.data.filepath:
        raise runner.RunnerError(UNSAVED_MESSAGE)
    return _abspath(folder)


def _default_folders() -> tuple[str, ...]:
    """The default ``deid/`` folder of this .blend, whose files are known to be outputs (see ``compat.is_output``)."""
    return (_abspath(DEFAULT_OUTPUT_DIR),) if bpy.data.filepath else ()


def owned_outputs() -> dict[str, str]:
    """Every output this .blend's add-on wrote, as {path_key(output): path_key(source)}.

    From the ledger each scene keeps (``scene.deid_edit.outputs``, JSON; it outlives a deleted copy
    strip) and from the strips tagged as copies. A file not listed here is never overwritten.
    """
    owned: dict[str, str] = {}
    for scene in bpy.data.scenes:
        settings = getattr(scene, "deid_edit", None)
        try:
            ledger = json.loads(settings.outputs) if settings is not None and settings.outputs else {}
        except ValueError:
            ledger = {}
        if isinstance(ledger, dict):
            owned.update({str(k): str(v) for k, v in ledger.items()})
        editor = scene.sequence_editor
        for strip in compat.strips_all(editor) if editor is not None else ():
            source = compat.get_prop(strip, compat.PROP_SOURCE)
            if source and getattr(strip, "filepath", ""):
                owned[runner.path_key(_abspath(strip.filepath))] = runner.path_key(source)
    return owned


def _record_output(scene: Any, output: str, source: str) -> None:
    settings = getattr(scene, "deid_edit", None)
    if settings is None:
        return
    try:
        ledger = json.loads(settings.outputs) if settings.outputs else {}
    except ValueError:
        ledger = {}
    ledger = ledger if isinstance(ledger, dict) else {}
    ledger[runner.path_key(output)] = runner.path_key(source)
    settings.outputs = json.dumps(ledger, sort_keys=True)


def _is_under(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)
    except ValueError:  # different drives on Windows
        return False


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
        self._replaced: list[str] = []
        self._errors: list[str] = []
        self._resolved_mode = prefs.default_mode if self.mode == "PREFERENCES" else self.mode
        editor = compat.sequencer_scene(context).sequence_editor
        collection = compat.editing_strips(editor)
        selected = compat.selected_movie_strips(collection)
        if not selected:
            self.report({"ERROR"}, "Select one or more movie strips to anonymize")
            return None
        try:
            out_dir = output_folder(prefs)
            cli = runner.resolve_cli(bpy.path.abspath(prefs.cli_path) if prefs.cli_path.startswith("//") else prefs.cli_path)
        except runner.RunnerError as exc:
            self.report({"ERROR"}, str(exc))
            return None
        originals, skipped = self._originals(collection, selected)
        if not originals:
            self.report(
                {"ERROR"},
                f"Nothing to anonymize: {', '.join(skipped)} is an anonymized copy made by deid-edit and its original strip "
                "was not found; select the original strip",
            )
            return None
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            self.report({"ERROR"}, f"Cannot create the output folder {out_dir}: {exc}")
            return None
        mode = self._resolved_mode
        owned = owned_outputs()
        tasks: dict[str, runner.Task] = {}
        for strip in originals:  # strips sharing a file share one CLI run
            source = _abspath(strip.filepath)
            task = tasks.get(source)
            if task is None:
                output, force = runner.choose_output(source, mode, out_dir, owned)
                owned[runner.path_key(output)] = runner.path_key(source)  # claimed: another clip of the same name gets -2
                task = tasks[source] = runner.Task(source, str(output), key=[], force=force)
            task.key.append(strip.name)
        keep, only = _split_paths(self.keep_photo), _split_paths(self.only_photo)

        def argv_for(task: runner.Task) -> list[str]:
            return runner.build_command(cli, task.source, task.output, mode, keep, only, force=task.force)

        return runner.Batch(list(tasks.values()), argv_for, on_result=self._on_result)

    def _originals(self, collection: Any, selected: list[Any]) -> tuple[list[Any], list[str]]:
        """The strips to anonymize (each selected original once, an anonymized copy replaced by its original) and the skipped names.

        A copy whose original is gone is skipped with a warning: anonymizing it again would only
        blur the blur (``clip.deid.deid``).
        """
        folders = _default_folders()
        chosen: dict[str, Any] = {}
        skipped: list[str] = []
        for strip in selected:
            if not compat.is_output(strip, _abspath, folders):
                chosen.setdefault(strip.name, strip)
                continue
            original = compat.find_original(collection, strip, _abspath, folders)
            if original is None:
                skipped.append(strip.name)
                self.report(
                    {"WARNING"},
                    f"Skipped {strip.name}: it is an anonymized copy made by deid-edit and its original strip was not found; "
                    "select the original instead",
                )
                continue
            if original.name not in chosen:
                self.report({"INFO"}, f"{strip.name} is an anonymized copy: anonymizing its original {original.name} again")
            chosen.setdefault(original.name, original)
        return list(chosen.values()), skipped

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
        _record_output(scene, output, task.source)
        mode = self._resolved_mode
        for name in task.key:
            original = compat.strips_all(editor).get(name)
            if original is None:  # deleted or renamed while the CLI ran
                self._errors.append(f"{name}: strip no longer exists; result left at {output}")
                continue
            collection = self._collection_of(editor, original)
            blend_dir = os.path.dirname(bpy.data.filepath) if bpy.data.filepath else ""
            relative = bool(blend_dir) and (original.filepath.startswith("//") or _is_under(output, blend_dir))
            path = bpy.path.relpath(output) if relative else output
            # The previous copy of this original in this mode is replaced: the new strip is added
            # first (if that fails the old one stays), then the old one is removed and the new one
            # takes its channel and name when they are free.
            previous = compat.previous_copies(collection, original, _abspath(original.filepath), mode, _abspath)
            prefer = previous[0].channel if previous else None
            try:
                new = compat.add_movie_above(collection, original, path, f"{original.name}.deid-{mode}")
            except (ValueError, RuntimeError) as exc:
                self._errors.append(f"{name}: {exc}")
                self.report({"ERROR"}, f"Could not add the anonymized strip for {name}: {exc}")
                continue
            for old in previous:
                self._replaced.append(old.name)
                collection.remove(old)
            if previous:
                new.name = f"{original.name}.deid-{mode}"
                span = (new.frame_final_start, new.frame_final_end)
                if prefer != new.channel and compat.free_channel(collection, prefer, *span, ignore=new) == prefer:
                    new.channel = prefer
            compat.mark_output(new, _abspath(original.filepath), mode, original.name)
            if new.channel != original.channel + 1 and new.channel != prefer:
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
            replaced = f" (replacing the previous copy of {len(self._replaced)})" if self._replaced else ""
            self.report(level, f"Added {len(self._added)} anonymized strip(s){replaced}: {', '.join(self._added)}")
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
        """One event while the CLI runs.

        Esc belongs to the job: its press cancels the job and its release is swallowed, and neither
        is passed on, so Esc never also stops playback, leaves a maximized area or reaches another
        tool. Every other event passes through, so the editor stays usable. The job ending on a
        timer tick or after the Cancel button passes that event on too (the tick may be another
        operator's timer).
        """
        if event.type == "ESC":
            if getattr(event, "value", "PRESS") == "RELEASE":
                return {"RUNNING_MODAL"}  # consumed: the press that started it was ours or already handled
            self._batch.cancel()
            return self._end(context)  # FINISHED or CANCELLED without PASS_THROUGH: the Esc stops here
        if STATE.cancel_requested:
            self._batch.cancel()
            return self._end(context) | {"PASS_THROUGH"}
        if event.type == "TIMER":
            try:
                self._batch.step()
            except Exception as exc:  # never leave a child, a timer and the panel's "running" state behind
                self._batch.cancel()
                self._cleanup(context)
                self.report({"ERROR"}, f"deid-edit add-on failed: {type(exc).__name__}: {exc}")
                return {"CANCELLED", "PASS_THROUGH"}
            STATE.fraction, STATE.text = self._batch.fraction, self._batch.status_text()
            self._set_status(context)
            _redraw_sequencers()
            if self._batch.finished:
                return self._end(context) | {"PASS_THROUGH"}
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
