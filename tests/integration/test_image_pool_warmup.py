"""Serving and worker processes start their image processes before taking work."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from caverna.bootstrap import IMAGE_PROCESS_MODULES, build_container, open_runtime
from caverna.config import Settings

# a builtin, so that running it in the child imports nothing of its own (a function of this
# module would import this module, and with it every module the check looks for)
LOADED = "{{name: name in __import__('sys').modules for name in {names!r}}}"


async def test_warming_starts_every_process_with_the_task_modules_loaded(tmp_path: Path) -> None:
    before = {child.pid for child in multiprocessing.active_children()}
    settings = Settings(data_dir=tmp_path, image_processes=2)
    runtime = await open_runtime(build_container(settings))
    try:
        assert not {c.pid for c in multiprocessing.active_children()} - before  # lazy until now
        pids = await runtime.warm_image_pool()
        started = {c.pid for c in multiprocessing.active_children()} - before
        assert len(started) == 2
        assert pids <= started
        assert runtime.image_pool is not None
        # the next task lands in a warm process: the modules are there before it imports them
        future = runtime.image_pool.submit(eval, LOADED.format(names=IMAGE_PROCESS_MODULES))
        assert future.result(timeout=30) == dict.fromkeys(IMAGE_PROCESS_MODULES, True)
    finally:
        await runtime.aclose()


async def test_warming_without_a_process_pool_does_nothing(tmp_path: Path) -> None:
    before = {child.pid for child in multiprocessing.active_children()}
    runtime = await open_runtime(build_container(Settings(data_dir=tmp_path, image_processes=0)))
    try:
        assert await runtime.warm_image_pool() == set()
        assert {c.pid for c in multiprocessing.active_children()} == before
    finally:
        await runtime.aclose()
