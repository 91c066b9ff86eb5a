"""deid-edit for Blender's Video Sequence Editor: anonymize the faces in selected movie strips.

Works as a Blender 4.2+ extension (``blender_manifest.toml``) and as a legacy add-on (``bl_info``
below, folder named ``deid_edit_vse``). The CLI does the work; ``runner`` (no ``bpy``) drives it,
``operators`` and ``ui`` are the Blender side, ``compat`` hides the 4.2 vs 4.4+ API renames.
"""

from __future__ import annotations

import bpy

from . import operators, ui

bl_info = {
    "name": "deid-edit Face Anonymizer",
    "author": "deid-edit developers",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Sequencer > Sidebar > De-identify",
    "description": "Blur, pixelate or cover the faces in Sequencer movie strips with the deid-edit CLI",
    "category": "Sequencer",
}

CLASSES = (*operators.CLASSES, *ui.CLASSES)


def register() -> None:
    """Register classes, then the per-scene settings that the panel needs."""
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.deid_edit = bpy.props.PointerProperty(type=ui.DeidEditSceneSettings)


def unregister() -> None:
    """Undo ``register()`` in reverse; a running job is cancelled by its operator's ``cancel()``."""
    del bpy.types.Scene.deid_edit
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
