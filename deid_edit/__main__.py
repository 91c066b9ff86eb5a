"""``python -m deid_edit`` is the ``deid-edit`` command."""

from .cli import main

if __name__ == "__main__":
    main()
