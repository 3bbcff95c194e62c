"""``ecglm submit COMMAND CONFIG [key=value ...]``: run an ecglm command as a Ray job.

Steps: load the config here with the overrides (a bad override fails now, exit 2, nothing
submitted); connect to the job server (exit 2 with how to reach it); check the config for
cluster use and place relative written paths under ``cluster.storage_root``
(:mod:`ecglm.cluster.placement`); submit ``python jobs/<command>.py CONFIG ...`` with the
repo as working dir (:mod:`ecglm.cluster.runtime`); print the job id and where to watch it.

Waiting: by default ``submit`` waits for the job to end, printing status changes, and exits
with its status (0 SUCCEEDED, 1 FAILED/STOPPED; Ray's message with the job's last log lines is
shown on failure). ``--follow`` streams the job's logs meanwhile. ``--no-wait`` returns right
after submitting (``serve`` jobs run until stopped, so they never wait unless ``--follow``).
Ctrl-C while waiting leaves the job running (on a terminal it first asks whether to stop it)
and exits 130.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence
from urllib.parse import urlparse

from ray.job_submission import JobStatus, JobSubmissionClient

from ecglm.cluster import jobs
from ecglm.cluster.placement import LOOPBACK_HOSTS, place_for_cluster
from ecglm.cluster.runtime import (
    SCRIPTS,
    config_argument,
    entrypoint,
    find_repo,
    runtime_env,
)
from ecglm.config import ExperimentConfig, load_config

COMMANDS = tuple(SCRIPTS)
"""Commands ``ecglm submit`` runs as jobs."""
NO_WAIT_COMMANDS = frozenset({"serve"})
"""Commands whose jobs run until stopped: ``submit`` returns once they are submitted."""


@dataclass(frozen=True)
class SubmitRequest:
    """What the user asked for (``ecglm submit`` arguments)."""

    command: str
    config: Path
    overrides: list[str] = field(default_factory=list)
    job_options: list[str] = field(default_factory=list)
    """Command options passed through to the job (``--checkpoint X``, ``--no-eval``...)."""
    tiny: bool = False
    address: Optional[str] = None
    follow: bool = False
    no_wait: bool = False


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _local_ips() -> set[str]:
    import psutil  # a Ray dependency

    ips = {"127.0.0.1", "::1"}
    for addrs in psutil.net_if_addrs().values():
        ips.update(a.address.split("%")[0] for a in addrs)
    return ips


def cluster_is_remote(address: str) -> bool:
    """True unless the cluster's head runs on this machine: the address names a loopback host
    *and* the head's node IP is one of this machine's (a ``ray dashboard``/SSH tunnel to a
    remote head also answers on 127.0.0.1). Unknown (state API unavailable): remote."""
    if urlparse(address).hostname not in LOOPBACK_HOSTS:
        return True
    try:
        from ray.util.state import list_nodes

        nodes = list_nodes(address=address, timeout=10, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - any failure: cannot tell, assume remote
        return True
    mine = _local_ips()
    return not nodes or any(n.node_ip not in mine for n in nodes)


def job_id_for(command: str, cfg: ExperimentConfig) -> str:
    """Readable unique submission id: ``ecglm-<command>-<name>-<UTC time>-<4 hex>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"ecglm-{command}-{cfg.name}-{stamp}-{uuid.uuid4().hex[:4]}"


def _absolute_checkpoint(options: list[str], base: Path) -> list[str]:
    """``--checkpoint``/``--resume`` values that are relative local folders made absolute."""
    out = list(options)
    for i, item in enumerate(out[:-1]):
        if item in ("--checkpoint", "--resume") and (base / out[i + 1]).exists() \
                and not Path(out[i + 1]).is_absolute():
            out[i + 1] = str((base / out[i + 1]).resolve())
            _err(f"warning: {item} {out[i + 1]}: a local folder, must exist on every node")
    return out


def _on_status(job_id: str) -> Callable[[JobStatus], None]:
    def show(status: JobStatus) -> None:
        print(f"[ecglm] job {job_id}: {status.value}", flush=True)
    return show


def _finish(client: JobSubmissionClient, job_id: str) -> int:
    """Print how the job ended; return its exit code."""
    end = jobs.outcome(client, job_id)
    if end.status == JobStatus.SUCCEEDED:
        print(f"[ecglm] job {job_id} SUCCEEDED", flush=True)
    else:
        _err(f"[ecglm] job {job_id} {end.status.value}: {end.short_message()}")
    return end.code


def _interrupted(client: JobSubmissionClient, job_id: str) -> int:
    stop = False
    if sys.stdin.isatty():
        try:
            stop = input(f"\nstop job {job_id}? [y/N] ").strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):
            stop = False
    if stop:
        client.stop_job(job_id)
        _err(f"[ecglm] stop requested for {job_id}")
    else:
        _err(f"[ecglm] job {job_id} keeps running: `ecglm jobs logs {job_id} --follow`, "
             f"`ecglm jobs stop {job_id}`")
    return jobs.INTERRUPTED


@contextmanager
def ray_logs_at(level: int) -> Iterator[None]:
    """Only records at ``level`` or above from Ray's loggers (``ray.*``) reach the terminal
    during the body: the client side of job submission logs every packaging step and the log
    stream's close at INFO. (Ray's child loggers carry their own levels, so the filter sits on
    the ``ray`` logger's handlers.)"""
    handlers = logging.getLogger("ray").handlers
    drop_below = _LevelFilter(level)
    for handler in handlers:
        handler.addFilter(drop_below)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop_below)


class _LevelFilter(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


def watch(client: JobSubmissionClient, job_id: str, follow: bool) -> int:
    """Wait for the job (streaming its logs when ``follow``); exit code of its final status."""
    try:
        if follow:
            with ray_logs_at(logging.WARNING):
                jobs.stream_logs(client, job_id)
            jobs.final_status(client, job_id)
        else:
            jobs.wait(client, job_id, _on_status(job_id))
    except KeyboardInterrupt:
        return _interrupted(client, job_id)
    return _finish(client, job_id)


def submit(req: SubmitRequest) -> int:
    """Run ``ecglm submit``; returns the process exit status.

    Raises:
        ConfigError: bad config or override, or paths not fit for a cluster (names the key);
            the CLI turns it into exit status 2. Nothing is submitted then.
    """
    base = Path.cwd()
    cfg = load_config(req.config, req.overrides, tiny=req.tiny)
    place_for_cluster(cfg, base, remote=False)  # path errors before anything is contacted
    address = jobs.resolve_address(req.address, cfg.cluster.address)
    try:
        client = jobs.connect(address)
    except jobs.ClusterUnreachable as exc:
        _err(f"error: {exc}")
        return jobs.UNREACHABLE
    placement = place_for_cluster(cfg, base, remote=cluster_is_remote(address))
    for warning in placement.warnings:
        _err(f"warning: {warning}")
    job_overrides = [*req.overrides, *placement.overrides]
    load_config(req.config, job_overrides, tiny=req.tiny)  # what the job will load, checked
    repo = find_repo(base)
    config_arg, config_env = config_argument(req.config, repo, cfg.cluster.excludes)
    job_args = [*(["--tiny"] if req.tiny else []), *_absolute_checkpoint(req.job_options, base),
                *job_overrides]
    job_id = job_id_for(req.command, cfg)
    print(f"[ecglm] uploading {repo} as the job's working dir (without "
          f"{', '.join(cfg.cluster.excludes)})", flush=True)
    with ray_logs_at(logging.ERROR):  # Ray's packaging chatter (.git ignored, zip names...)
        client.submit_job(
            entrypoint=entrypoint(req.command, config_arg, job_args),
            runtime_env=runtime_env(cfg, repo, config_env),
            submission_id=job_id,
            metadata={"ecglm_command": req.command, "ecglm_config": str(req.config),
                      "ecglm_name": cfg.name},
        )
    print(f"[ecglm] submitted {req.command} job {job_id} to {address}\n"
          f"[ecglm]   dashboard: {address}/#/jobs\n"
          f"[ecglm]   logs:      ecglm jobs logs {job_id} --follow --address {address}\n"
          f"[ecglm]   stop:      ecglm jobs stop {job_id} --address {address}", flush=True)
    if req.no_wait or (req.command in NO_WAIT_COMMANDS and not req.follow):
        return 0
    return watch(client, job_id, req.follow)


def jobs_command(action: str, job_id: Optional[str], address: Optional[str],
                 follow: bool = False) -> int:
    """``ecglm jobs list | status ID | logs ID [--follow] | stop ID``; exit status."""
    url = jobs.resolve_address(address)
    try:
        client = jobs.connect(url)
    except jobs.ClusterUnreachable as exc:
        _err(f"error: {exc}")
        return jobs.UNREACHABLE
    if action == "list":
        for info in jobs.list_jobs(client):
            print(jobs.describe(info))
        return 0
    assert job_id is not None
    try:
        if action == "status":
            end = jobs.outcome(client, job_id)
            print(f"{job_id}  {end.status.value}"
                  + (f"  {end.short_message()}" if end.message else ""))
            return 0
        if action == "stop":
            stopped = client.stop_job(job_id)
            print(f"{job_id}: {'stop requested' if stopped else 'not running'}")
            return 0
        if follow:
            return watch(client, job_id, follow=True)
        print(client.get_job_logs(job_id), end="")
        return 0
    except RuntimeError as exc:  # the job server's answer to an unknown id
        if "does not exist" in str(exc) or "404" in str(exc):
            _err(f"error: no job {job_id!r} at {url} (`ecglm jobs list` shows the ids)")
            return 2
        raise


def parse_job_options(command: str, checkpoint: Optional[str], resume: Optional[str],
                      no_eval: bool) -> list[str]:
    """Command options of the job, checked against the command (``--checkpoint`` is required
    by eval and serve, ``--resume``/``--no-eval`` belong to train).

    Raises:
        ValueError: an option the command does not take, or a missing ``--checkpoint``.
    """
    if command in ("eval", "serve") and not checkpoint:
        raise ValueError(f"`submit {command}` needs --checkpoint (folder, run id or models:/)")
    if checkpoint and command not in ("eval", "serve"):
        raise ValueError(f"--checkpoint is for eval and serve, not {command}")
    if (resume or no_eval) and command != "train":
        raise ValueError(f"--resume/--no-eval are for train, not {command}")
    out: list[str] = []
    if checkpoint:
        out += ["--checkpoint", checkpoint]
    if resume:
        out += ["--resume", resume]
    if no_eval:
        out.append("--no-eval")
    return out


def run_submit(command: str, config: Path, overrides: Sequence[str], *, tiny: bool,
               address: Optional[str], follow: bool, no_wait: bool,
               checkpoint: Optional[str] = None, resume: Optional[str] = None,
               no_eval: bool = False) -> int:
    """CLI glue: check the command options, then :func:`submit`."""
    try:
        options = parse_job_options(command, checkpoint, resume, no_eval)
    except ValueError as exc:
        _err(f"error: {exc}")
        return 2
    if follow and no_wait:
        _err("error: --follow and --no-wait exclude each other")
        return 2
    return submit(SubmitRequest(command, config, list(overrides), options, tiny, address,
                                follow, no_wait))
