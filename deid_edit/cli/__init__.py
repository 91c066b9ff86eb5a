"""The ``deid-edit`` command line: product commands (``product``), research commands (``research``)
and the options they share (``common``).

``main()`` maps failures to exit codes: 1 for a ``DeidError`` (one clear line), 2 for usage and
option errors, 130 for Ctrl-C (partial output already removed by the pipeline).
``DEID_EDIT_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from ..errors import DeidError
from ..progress import JsonProgress
from . import product, research  # noqa: F401 - they register their commands on the group
from .common import cli, make_progress, result_line

__all__ = ["cli", "main", "make_progress", "result_line"]


def main(argv: list[str] | None = None) -> None:
    """Console entry point with the exit-code contract (0 ok, 1 error, 2 usage, 130 interrupted)."""
    debug = os.environ.get("DEID_EDIT_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else argv
    # A process started in the background by a non-interactive shell, or by some GUI hosts, inherits
    # SIGINT as *ignored*, and Python then never raises KeyboardInterrupt: the editor plugins' Cancel
    # (SIGINT, then SIGKILL after a grace period) would leave a temp file behind. Always honour it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    json_mode = "json" in args and "--progress" in args
    try:
        cli.main(args=args, prog_name="deid-edit", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("deid-edit: interrupted; no partial output was left", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DeidError as exc:
        if debug:
            raise
        if json_mode:
            JsonProgress().event("error", message=str(exc))
        click.echo(f"deid-edit: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"deid-edit: internal error: {type(exc).__name__}: {exc} (set DEID_EDIT_DEBUG=1 for details)", err=True)
        sys.exit(1)
