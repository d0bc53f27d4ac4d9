"""Resolving ``task.name`` to a task: built-in names, ``module:attribute`` import paths, and
names registered by installed distributions under the entry-point group ``rs_pipeline.tasks``.

Every way a name can fail (unknown, module not importable, attribute missing, not a ``Task``,
entry point broken, constructor failing) is one ``InputError`` naming the setting and the cause.
The run context resolves the name when settings load, so the CLI, the Dagster definitions, the
UI and the nightly schedule all go through :func:`get_task` before any model work.
"""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import entry_points
from pathlib import Path

from rs_pipeline.errors import InputError
from rs_pipeline.imports import import_object
from rs_pipeline.tasks.addition import AdditionTask
from rs_pipeline.tasks.base import Task
from rs_pipeline.tasks.prompts_file import PromptsFileTask
from rs_pipeline.tasks.reversal import ReversalTask

ENTRY_POINT_GROUP = "rs_pipeline.tasks"
BUILTIN_TASKS = {"rev8": ReversalTask, "addition": AdditionTask}
SETTING = "setting task.name"


def get_task(name: str, prompts_path: str | None = None) -> Task:
    """The task ``name`` names: a built-in one, ``prompts_file`` over your own prompts, an import
    path ``package.module:Attribute`` or a name registered under the entry-point group
    ``rs_pipeline.tasks``. The attribute is a ``Task`` subclass (called with no arguments), a
    ``Task`` instance, or a factory returning one."""
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]()
    if name == "prompts_file":
        if not prompts_path:
            raise InputError("setting task.prompts_path is required when task.name is 'prompts_file'")
        return PromptsFileTask(prompts_path)
    if ":" in name:
        return _make(_import(name), f"{name!r}")
    found = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name}
    if not found:
        raise InputError(f"{SETTING}: unknown task {name!r} (known: {', '.join(known_tasks())}; "
                         "or an import path 'package.module:TaskClass')")
    if len(found) > 1:
        raise InputError(f"{SETTING}: task {name!r} is registered by several entry points "
                         f"({', '.join(sorted(found))}); name one by its import path instead")
    ep = next(iter(found.values()))
    where = f"{name!r} (entry point {ep.value!r} in group {ENTRY_POINT_GROUP!r})"
    try:
        target = ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure of a plug-in is reported, naming it
        raise InputError(f"{SETTING}: task {where} does not load "
                         f"({type(exc).__name__}: {exc})") from None
    return _make(target, where)


def known_tasks() -> list[str]:
    """Built-in names, then the names installed distributions register (sorted)."""
    plugins = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} - set(BUILTIN_TASKS))
    return [*BUILTIN_TASKS, "prompts_file", *plugins]


def task_code_version(task: Task) -> str:
    """A hash of the source files of ``task``'s classes that live outside this package (the
    package's own code is versioned as a whole), so editing a plug-in task, say its verifier,
    is new work rather than reused results; "" for the built-in tasks."""
    package = Path(__file__).resolve().parents[1]
    h, found = hashlib.sha256(), False
    for cls in type(task).__mro__:
        if not issubclass(cls, Task):
            continue
        source = inspect.getsourcefile(cls)
        if source is None or Path(source).resolve().is_relative_to(package):
            continue
        found = True
        h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        h.update(Path(source).read_bytes())
    return h.hexdigest()[:16] if found else ""


def _import(path: str):
    return import_object(path, SETTING, "task", "package.module:TaskClass")


def _make(target, where: str) -> Task:
    """A task from what a name points at: a ``Task`` subclass, instance, or factory."""
    if isinstance(target, Task):
        return target
    if isinstance(target, type) and not issubclass(target, Task):
        raise InputError(f"{SETTING}: task {where} is the class {target.__qualname__}, which is "
                         "not a subclass of rs_pipeline.tasks.Task")
    if not callable(target):
        raise InputError(f"{SETTING}: task {where} is of type {type(target).__name__!r}, not a "
                         "Task subclass or a factory returning a Task")
    try:
        task = target()
    except Exception as exc:  # noqa: BLE001 - the plug-in's constructor, reported naming it
        raise InputError(f"{SETTING}: creating task {where} failed "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(task, Task):
        raise InputError(f"{SETTING}: task {where} returned an object of type "
                         f"{type(task).__name__!r}, not an rs_pipeline.tasks.Task")
    return task
