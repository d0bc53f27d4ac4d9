"""Tasks: the interface (``base.Task``), the built-in ones, and the registry that resolves
``task.name`` (built-in names, import paths, entry points)."""

from __future__ import annotations

from rs_pipeline.tasks.addition import AdditionTask
from rs_pipeline.tasks.base import Task
from rs_pipeline.tasks.prompts_file import PromptsFileTask
from rs_pipeline.tasks.registry import (
    BUILTIN_TASKS,
    ENTRY_POINT_GROUP,
    get_task,
    known_tasks,
    task_code_version,
)
from rs_pipeline.tasks.reversal import ReversalTask

__all__ = ["Task", "get_task", "known_tasks", "task_code_version", "BUILTIN_TASKS", "ENTRY_POINT_GROUP",
           "ReversalTask", "AdditionTask", "PromptsFileTask"]
