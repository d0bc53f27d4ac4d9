"""Built-in tasks and the task registry."""

from __future__ import annotations

from rs_pipeline.errors import InputError
from rs_pipeline.tasks.addition import AdditionTask
from rs_pipeline.tasks.base import Task
from rs_pipeline.tasks.prompts_file import PromptsFileTask
from rs_pipeline.tasks.reversal import ReversalTask

BUILTIN_TASKS = {"rev8": ReversalTask, "addition": AdditionTask}


def get_task(name: str, prompts_path: str | None = None) -> Task:
    """The task named in the config: a built-in one, or ``prompts_file`` over your own prompts."""
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]()
    if name == "prompts_file":
        if not prompts_path:
            raise InputError("setting task.prompts_path is required when task.name is 'prompts_file'")
        return PromptsFileTask(prompts_path)
    known = ", ".join([*BUILTIN_TASKS, "prompts_file"])
    raise InputError(f"setting task.name: unknown task {name!r} (known: {known})")


__all__ = ["Task", "get_task", "BUILTIN_TASKS", "ReversalTask", "AdditionTask", "PromptsFileTask"]
