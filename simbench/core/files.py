"""Writing result files so that readers never see half of one and failures leave no debris."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Union

Content = Union[str, bytes, Callable[[Path], object]]


def write_atomic(path: str | Path, content: Content) -> Path:
    """Write ``content`` (text, bytes, or ``fn(tmp_path)`` that writes the file) to a temporary
    file beside ``path`` and rename it over ``path``. On an error (a full disk) the temporary
    file is removed and the old ``path``, if any, is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(content, str):
            tmp.write_text(content)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
