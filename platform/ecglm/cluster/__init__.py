"""Running ecglm commands as Ray jobs on a cluster: ``ecglm submit`` and ``ecglm jobs``.

* :mod:`ecglm.cluster.placement`: checks a config for cluster use and places relative written
  paths under ``cluster.storage_root`` (pure, no Ray);
* :mod:`ecglm.cluster.runtime`: the job's runtime env (working dir, env vars) and entrypoint;
* :mod:`ecglm.cluster.jobs`: the job server client (address, list, logs, status, stop, wait);
* :mod:`ecglm.cluster.submit`: ``ecglm submit`` itself;
* what runs inside a job: ``jobs/<command>.py`` -> :func:`ecglm.cli.run_job`.

Nothing here imports torch or transformers: submitting takes about a second.
"""
