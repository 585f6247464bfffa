"""What an image process does when it starts, before any image reaches it."""

from __future__ import annotations

import importlib
import os

from PIL import Image


def start_image_process(modules: tuple[str, ...]) -> int:
    """Import the modules the pool's tasks run and register Pillow's formats.

    A spawned process imports lazily, on its first task: under load that is a second or so of
    CPU per process, paid while requests queue. Running this once per process at start moves
    that cost before the first request. Returns the process id, so a caller can tell the
    processes apart.
    """
    for name in modules:
        importlib.import_module(name)
    Image.init()
    return os.getpid()
