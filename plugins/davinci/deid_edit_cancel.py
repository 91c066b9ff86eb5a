"""Stop a running deid_edit_anonymize run: Workspace > Scripts > Edit > deid_edit_cancel.

Resolve's scripting API offers no dialog with a Cancel button, so the anonymize script watches for a
stop file instead (see ``deid_edit_anonymize.stop_file_path``: ``stop_file`` in
``deid_edit_anonymize.json`` or DEID_EDIT_STOP_FILE, else ``deid_edit_anonymize.stop`` in the temporary
folder). This script only creates that file. Within a fraction of a second the running script
interrupts the CLI (which deletes its partial output), reports the clip and the ones after it as
cancelled, keeps what it already placed, and removes the file. Creating the file any other way
(``touch``, a file manager) does the same. Keep this file next to ``deid_edit_anonymize.py``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import deid_edit_anonymize as anonymize  # noqa: E402  (found through the line above)


def main(environ=None):
    """Create the stop file and say so in the Console; returns its path."""
    path = anonymize.request_stop(environ=environ)
    anonymize.log(f"stop requested ({path}); a running anonymize run stops within a second")
    return path


if __name__ == "__main__":
    main()
