"""A small model's weights in a JSON card next to the code, read once on first use.

The lips' second opinion (labial.py) and the closure detector (closure.py) load the same way: lazily,
once per process (the recogniser's child process reads them in ``align.warm``), and a file that
cannot be read as a model turns that pass off with one log line, so the mouth goes on with the
phones as heard. ``use`` points at another file or turns the pass off (the eval tools' flags).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelFile(Generic[T]):
    def __init__(self, path: Path, build: Callable[[dict], T], what: str) -> None:
        self.path, self._build, self._what = Path(path), build, what
        self._model: T | None = None
        self._enabled = True
        self._lock = threading.Lock()

    def get(self) -> T | None:
        """The model (loaded once), or None when off or its file is missing or unreadable."""
        with self._lock:
            if self._enabled and self._model is None and self.path.exists():
                try:
                    self._model = self._build(json.loads(self.path.read_text()))
                except (OSError, ValueError, KeyError, TypeError) as e:
                    log.error("%s off: %s is not a model (%s: %s)", self._what, self.path, type(e).__name__, e)
                    self._enabled = False
            return self._model if self._enabled else None

    def use(self, path: Path | None) -> None:
        """The model at ``path`` from now on (None: off)."""
        with self._lock:
            self._model = None
            self._enabled = path is not None
            if path is not None:
                self.path = Path(path)
