"""Task plugins: one module per task, registered by name (see :mod:`ecglm.tasks.base`).

Nothing outside this package branches on ``cfg.task``: callers ask :func:`get_task` for the
plugin and use its interface. A new task is one module plus one line in :data:`TASKS`.
"""

from __future__ import annotations

from ecglm.config import ConfigError
from ecglm.tasks.base import EmptySplitError, RequestError, Task, TaskData, TaskManifest
from ecglm.tasks.classify import ClassifyTask
from ecglm.tasks.qa import QATask
from ecglm.tasks.report import GroundingTask, ReportTask

TASKS: dict[str, Task] = {t.name: t for t in (QATask(), ReportTask(), GroundingTask(),
                                              ClassifyTask())}
"""Every task plugin by name (instances are stateless)."""


def get_task(name: str) -> Task:
    """The plugin registered as ``name``.

    Raises:
        ConfigError: no such task (names the key ``task`` and the known names).
    """
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"task: unknown task {name!r}; known: {sorted(TASKS)}") from None


__all__ = ["TASKS", "EmptySplitError", "RequestError", "Task", "TaskData", "TaskManifest",
           "get_task"]
