"""What identifies a loaded file in the store: its resolved path and the hash of its bytes.

A leaf module so that every loader (loaders.py, pdf.py, ...) can use it without an import cycle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def source_name(path: Path) -> str:
    """The identity of a file in the store: its resolved absolute POSIX path."""
    return path.resolve().as_posix()


def file_hash(data: bytes) -> str:
    """sha256 of the file bytes (hex): a changed file is re-ingested, an unchanged one skipped."""
    return hashlib.sha256(data).hexdigest()
