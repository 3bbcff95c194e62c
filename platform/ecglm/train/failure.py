"""What a failed training run leaves behind, said where the user looks: the job's log and the
MLflow run.

When the Ray Train fit raises (a worker died, a step failed, Ctrl-C), the run's Ray folder
(``ecglm.ray_run_dir`` tag) may already hold resumable checkpoints. :func:`announce` finds the
latest one (:func:`ecglm.checkpoint.latest_resumable`), tags the MLflow run with it
(:data:`PARTIAL_CHECKPOINT_TAG`, :data:`PARTIAL_STEP_TAG`) and prints it with the command that
resumes it, before ``tracked_run`` closes the run FAILED (tags ``ecglm.error*`` and the
``error.txt`` traceback artifact).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, Optional

from ecglm.checkpoint import latest_resumable
from ecglm.tracking.tracked import PARTIAL_CHECKPOINT_TAG, PARTIAL_STEP_TAG, TrackedRun

__all__ = ["PARTIAL_CHECKPOINT_TAG", "PARTIAL_STEP_TAG", "announce",
           "partial_checkpoint_on_failure"]


def announce(run: TrackedRun, ray_run_dir: str, exc: BaseException) -> Optional[str]:
    """Tag ``run`` with the latest resumable checkpoint in ``ray_run_dir`` and print it with
    the resume command to stderr (see the module docstring). Best-effort: never raises (the
    training error must surface).

    Returns:
        The checkpoint's path, or None when there is none (that is printed too).
    """
    what = f"[ecglm] training failed ({type(exc).__name__})"
    try:
        found = latest_resumable(ray_run_dir)
    except Exception as err:  # noqa: BLE001 - unreadable storage: report it, keep the error
        print(f"{what}; could not look for a resumable checkpoint in {ray_run_dir}: {err}",
              file=sys.stderr, flush=True)
        return None
    if found is None:
        print(f"{what} before any resumable checkpoint was written in {ray_run_dir}: "
              "nothing to resume (train.checkpoint_every writes them more often)",
              file=sys.stderr, flush=True)
        return None
    path, state = found
    try:
        run.set_tags({PARTIAL_CHECKPOINT_TAG: path, PARTIAL_STEP_TAG: str(state.step)})
    except Exception as err:  # noqa: BLE001 - as above
        print(f"[ecglm] could not tag MLflow run {run.run_id}: {err}", file=sys.stderr)
    print(f"{what} after step {state.step}: latest resumable checkpoint {path}\n"
          f"[ecglm] resume with: ecglm train CONFIG --resume {run.run_id}  (CONFIG and "
          "overrides as in this run's config.yaml artifact)", file=sys.stderr, flush=True)
    return path


@contextmanager
def partial_checkpoint_on_failure(run: TrackedRun, ray_run_dir: str) -> Iterator[None]:
    """Run the block; when it raises (Ctrl-C included), :func:`announce` before the error
    propagates."""
    try:
        yield
    except BaseException as exc:
        announce(run, ray_run_dir, exc)
        raise
