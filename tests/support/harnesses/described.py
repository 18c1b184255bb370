"""A scheduler described in settings: the fake batch scheduler the tests ship
(``tests/support/fakebatch``) configured only through a ``[schedulers.fakeq]``
table in a corral.toml the harness writes (``$CORRAL_CONFIG``), so that
``backend="fakeq"`` is registered by corral reading its config, as a user's is.

Unlike the ``fakebatch`` harness it reads qstat's plain-text form, sends the
resources as ``#PBS`` lines of the script's header, and counts arrays from 1.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.backends import backend_names, unregister_backend
from corral.backends.batch.described import describe
from support.harnesses import Harness, HarnessSpec

#: The table, as a user writes it (also the README's example).
TABLE = """\
[schedulers.fakeq]
title = "fakeq"
description = "the fake batch scheduler of the tests, described in settings"
submit = ["qsub", "-o", "{output}"]
job_id = '^(\\d+)$'
status = ["qstat", "-u", "{user}", "-F", "text"]
status_columns = ["id", "state", "exit_status", "signal", "reason"]
status_skip = 1
states = { Q = "pending", H = "held", R = "running", F = "ended", W = "timed_out", \
D = "cancelled" }
cancel = ["qdel", "{ids}"]
hold = ["qhold", "{ids}"]
release = ["qrls", "{ids}"]
signal = ["qsig", "-s", "USR1", "{ids}"]
directive_prefix = "#PBS"
walltime_format = "seconds"
memory_unit = "MB"
dependency = ["-W", "depend=afterok:{ids}"]
job_id_variable = "FAKEBATCH_JOBID"
failed_exit_status = 1
forget_after = "3s"

[schedulers.fakeq.directives]
cores = ["-l", "ncpus={cores}"]
memory = ["-l", "mem={memory}"]
walltime = ["-l", "walltime={walltime}"]
gpus = ["-l", "ngpus={gpus}"]
name = ["-N", "{name}"]

[schedulers.fakeq.array]
argument = ["-t", "{first}-{last}{throttle}"]
throttle = "%{limit}"
index_variable = "FAKEBATCH_ARRAY_INDEX"
first_index = 1
task_id = "{job}_{index}"
"""

NAME = "fakeq"


def start(request: pytest.FixtureRequest, root: Path) -> Iterator[Harness]:
    from support.fakebatch.cluster import FakeBatch

    cluster = FakeBatch(root / "fakebatch", forget_s=3.0)
    cluster.root.mkdir()
    config = root / "corral.toml"
    config.write_text(TABLE)
    environ = {**cluster.environ(), "CORRAL_CONFIG": str(config)}
    monkeypatch = request.getfixturevalue("monkeypatch")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    try:
        yield Harness("described", root, environ,
                      status_queries=lambda: len(cluster.calls("qstat")))
    finally:
        cluster.stop()
        if NAME in backend_names():  # registered by corral reading the config
            unregister_backend(NAME)


HARNESS = HarnessSpec("described", start, backend=NAME,
                      test_backend=describe(NAME, tomllib.loads(TABLE)["schedulers"][NAME]))
