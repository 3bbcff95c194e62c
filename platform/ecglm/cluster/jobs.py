"""The Ray job server, through :class:`ray.job_submission.JobSubmissionClient`.

``ecglm jobs list | logs ID [--follow] | status ID | stop ID`` and the waiting/streaming part
of ``ecglm submit``. The address is ``--address``, else ``cluster.address``, else
``RAY_ADDRESS``, else :data:`DEFAULT_ADDRESS` (the dashboard port that ``ray dashboard
cluster.yaml`` or an SSH tunnel forwards).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, TextIO

from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
POLL_S = 1.0
"""Seconds between status polls while waiting for a job."""
EXIT_CODES = {JobStatus.SUCCEEDED: 0, JobStatus.FAILED: 1, JobStatus.STOPPED: 1}
"""Exit status of ``ecglm submit`` / ``ecglm jobs logs --follow`` per final job status."""
INTERRUPTED = 130
"""Exit status after Ctrl-C (the job keeps running unless the user asked to stop it)."""
MESSAGE_LINES = 30
"""Lines of a failed job's log shown by ``submit`` and ``jobs status``."""
UNREACHABLE = 2
"""Exit status when the job server does not answer."""


class ClusterUnreachable(RuntimeError):
    """The job server at the address does not answer (message says how to reach it)."""


def resolve_address(cli: Optional[str] = None, configured: Optional[str] = None) -> str:
    """The job server URL: ``cli``, else ``configured`` (``cluster.address``), else
    ``RAY_ADDRESS``, else :data:`DEFAULT_ADDRESS`; ``host:port`` gets ``http://``."""
    address = cli or configured or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    return address if "://" in address else f"http://{address}"


def connect(address: str) -> JobSubmissionClient:
    """A client for the job server at ``address``.

    Raises:
        ClusterUnreachable: nothing answers there, or it is not a Ray job server.
    """
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterUnreachable(
            f"no Ray job server answers at {address} ({first[:200]}).\n"
            "  Reach the cluster's dashboard first: `ray dashboard cluster.yaml` (forwards "
            "8265 to 127.0.0.1) or `ssh -N -L 8265:127.0.0.1:8265 <user>@<head>`; a local "
            "head: `ray start --head --num-cpus 4`.\n  Then pass --address, set "
            "cluster.address or RAY_ADDRESS (default http://127.0.0.1:8265).") from None


def is_terminal(status: JobStatus) -> bool:
    return status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)


def exit_code(status: JobStatus) -> int:
    """0 SUCCEEDED, 1 FAILED or STOPPED (see :data:`EXIT_CODES`)."""
    return EXIT_CODES.get(status, 1)


def describe(info: JobDetails) -> str:
    """One line: id, status, entrypoint (shortened), message of a finished job."""
    job_id = info.submission_id or info.job_id or "?"
    entry = info.entrypoint if len(info.entrypoint) <= 90 else info.entrypoint[:87] + "..."
    return f"{job_id}  {info.status.value:<9}  {entry}"


def list_jobs(client: JobSubmissionClient) -> list[JobDetails]:
    """Submitted jobs (with a submission id), oldest first."""
    jobs = [j for j in client.list_jobs() if j.submission_id]
    return sorted(jobs, key=lambda j: j.start_time or 0)


async def _tail(client: JobSubmissionClient, job_id: str, out: TextIO) -> None:
    async for chunk in client.tail_job_logs(job_id):
        out.write(chunk)
        out.flush()


def stream_logs(client: JobSubmissionClient, job_id: str, out: TextIO = sys.stdout) -> None:
    """Write the job's logs to ``out`` as they come, until the job ends."""
    asyncio.run(_tail(client, job_id, out))


def wait(client: JobSubmissionClient, job_id: str, on_change: Callable[[JobStatus], None],
         poll_s: float = POLL_S) -> JobStatus:
    """Poll until the job ends; ``on_change`` gets every new status. Returns the final one."""
    last: Optional[JobStatus] = None
    while True:
        status = client.get_job_status(job_id)
        if status != last:
            on_change(status)
            last = status
        if is_terminal(status):
            return status
        time.sleep(poll_s)


def final_status(client: JobSubmissionClient, job_id: str, timeout_s: float = 30.0
                 ) -> JobStatus:
    """The job's status once terminal (the log stream can end a moment before the status
    is written), waiting at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    status = client.get_job_status(job_id)
    while not is_terminal(status) and time.monotonic() < deadline:
        time.sleep(0.2)
        status = client.get_job_status(job_id)
    return status


@dataclass(frozen=True)
class Outcome:
    """How a job ended, for the user."""

    status: JobStatus
    message: str
    """Ray's message (a failed entrypoint's exit code and last log lines)."""

    @property
    def code(self) -> int:
        return exit_code(self.status)

    def short_message(self, lines: int = MESSAGE_LINES) -> str:
        """Ray's message cut to its first line plus the last ``lines`` lines (a failed job's
        message carries up to 20,000 characters of its log)."""
        parts = self.message.splitlines()
        if len(parts) <= lines + 1:
            return self.message
        return "\n".join([parts[0], f"  ... ({len(parts) - lines - 1} lines; all of them: "
                          "`ecglm jobs logs ID`)", *parts[-lines:]])


def outcome(client: JobSubmissionClient, job_id: str) -> Outcome:
    info = client.get_job_info(job_id)
    return Outcome(info.status, (info.message or "").strip())
