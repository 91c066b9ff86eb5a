"""The package version, apart from ``deid_edit/__init__`` so any module can read it without an import circle."""

__version__ = "0.1.0"
