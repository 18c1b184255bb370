"""Setting up the Dask backend: what is refused, and how, before any cluster runs
(the fast lane). The stories on real Dask clusters are in test_dask.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corral
from corral.backends.dask.resources import WorkerCapacity, dask_resources, refusal
from corral.config import ConfigError, load_config
from corral.spec import Resources


def test_import_corral_does_not_import_dask() -> None:
    code = ("import sys, corral; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_without_distributed_the_dask_backend_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "distributed.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'distributed'\", name='distributed')\n")
    code = "import corral; corral.Scheduler(backend='dask')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert ("corral.errors.BackendError: the Dask backend needs the distributed package, which "
            "is not installed here (No module named 'distributed'); install it with: "
            "pip install 'corral[dask]'") in done.stderr


@pytest.mark.parametrize(("options", "message"), [
    ({"address": 42}, r"address=42 must be a Dask scheduler's address \('tcp://host:8786'\), "
                      r"a distributed\.Client or a cluster object"),
    ({"backend_options": {"adress": "tcp://x:1"}},
     r"the Dask backend takes no backend option adress \(it takes address, client, n_workers, "
     r"connect_timeout\)"),
    ({"backend_options": {"n_workers": 0}}, r"n_workers=0 must be an int >= 1"),
    ({"backend_options": {"connect_timeout": -1}, "address": "tcp://127.0.0.1:1"},
     r"connect_timeout=-1 must be a number of seconds > 0"),
    ({"address": "tcp://127.0.0.1:1", "backend_options": {"address": "tcp://127.0.0.1:2"}},
     r"give the address once: address= or backend_options\['address'\], not both"),
])
def test_bad_dask_settings_are_refused_naming_them(options, message, tmp_path) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        corral.Scheduler(backend="dask", workdir=tmp_path / "run", **options)


def test_an_address_is_refused_by_a_backend_that_connects_to_nothing(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"^address='tcp://h:8786' is for a backend that "
                                         r"connects to a scheduler of its own \(dask\); "
                                         r"the local backend takes none$"):
        corral.Scheduler(address="tcp://h:8786", workdir=tmp_path / "run")


def test_an_unreachable_scheduler_is_an_error_within_the_connect_timeout(tmp_path) -> None:
    begun = time.monotonic()
    with pytest.raises(corral.BackendError,
                       match=r"^cannot reach the Dask scheduler at tcp://127\.0\.0\.1:1 within "
                             r"1 s: "):
        corral.Scheduler(backend="dask", address="tcp://127.0.0.1:1",
                         backend_options={"connect_timeout": 1}, workdir=tmp_path / "run")
    assert time.monotonic() - begun < 15


@pytest.mark.parametrize(("table", "message"), [
    ('address = 8786', r"daemon\.address: address=8786 must be a scheduler's address, "
                       r"e\.g\. \"tcp://host:8786\""),
    ('backend_options = "n_workers=2"', r"daemon\.backend_options: backend_options must be a "
                                        r"table of the backend's settings, e\.g\. "
                                        r"backend_options = \{ n_workers = 2 \}"),
])
def test_a_bad_dask_daemon_table_names_the_key(table, message, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG", os.devnull)
    config = tmp_path / "corral.toml"
    config.write_text(f'[daemon]\nbackend = "dask"\n{table}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(cwd=tmp_path)


def test_the_daemon_table_carries_the_address_and_options(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG", os.devnull)
    config = tmp_path / "corral.toml"
    config.write_text('[daemon]\nbackend = "dask"\naddress = "tcp://10.0.0.5:8786"\n'
                      'backend_options = { connect_timeout = 30 }\n')
    daemon = load_config(cwd=tmp_path).daemon
    assert (daemon.backend, daemon.address, dict(daemon.backend_options)) == (
        "dask", "tcp://10.0.0.5:8786", {"connect_timeout": 30})


# -- resources as Dask sees them (pure) --------------------------------------------------------

GPU_WORKER = WorkerCapacity("tcp://a:1", 4, 8 * 1024**3, {"cores": 4, "GPU": 1})
PLAIN_WORKER = WorkerCapacity("tcp://b:1", 2, 0, {})


def test_only_what_some_worker_declares_is_asked_of_dask() -> None:
    asked = Resources(cores=2, memory_mb=1024, gpus=1)
    assert dask_resources(asked, [GPU_WORKER, PLAIN_WORKER]) == {"cores": 2, "GPU": 1}
    assert dask_resources(Resources(cores=2, memory_mb=1024), [PLAIN_WORKER]) == {}


def test_a_one_core_job_asks_for_cores_only_where_every_worker_declares_them() -> None:
    """Else the workers that declare nothing would never get a job."""
    assert dask_resources(Resources(), [GPU_WORKER, PLAIN_WORKER]) == {}
    assert dask_resources(Resources(), [GPU_WORKER]) == {"cores": 1}


def test_a_request_fits_one_worker_not_the_names_all_workers_declare() -> None:
    """Dask runs a task only on a worker declaring every resource it asks for."""
    cores_only = WorkerCapacity("tcp://c:1", 1, 0, {"cores": 1})
    gpu_only = WorkerCapacity("tcp://g:1", 1, 0, {"GPU": 1})
    assert dask_resources(Resources(gpus=1), [cores_only, gpu_only]) == {"GPU": 1}
    assert refusal(Resources(gpus=1), [cores_only, gpu_only]) is None
    # More cores than any worker declares: runs where cores are not declared.
    assert dask_resources(Resources(cores=8), [GPU_WORKER, PLAIN_WORKER]) == {}
    assert refusal(Resources(cores=8), [GPU_WORKER, PLAIN_WORKER]) is None
    assert str(refusal(Resources(cores=8, gpus=1), [GPU_WORKER, PLAIN_WORKER])).startswith(
        "asks for 8 cores, 1 GPU but no Dask worker has that much: tcp://a:1 has GPU=1, cores=4")


def test_with_no_worker_yet_a_gpu_job_still_waits_for_a_gpu_worker() -> None:
    assert dask_resources(Resources(cores=4, memory_mb=1024, gpus=2), []) == {"GPU": 2}


def test_with_no_worker_yet_nothing_is_refused() -> None:
    """An adaptive cluster may start its workers later."""
    assert refusal(Resources(cores=64, gpus=8), []) is None


def test_a_refusal_lists_four_workers_and_counts_the_rest() -> None:
    workers = [WorkerCapacity(f"tcp://w{i}:1", 1, 0, {"cores": 1}) for i in range(7)]
    message = str(refusal(Resources(cores=2), workers))
    assert message.startswith("asks for 2 cores but no Dask worker has that much: "
                              "tcp://w0:1 has cores=1 (1 threads)")
    assert message.endswith("; and 3 more") and message.count("tcp://") == 4
    assert re.search(r"tcp://w3:1 has cores=1", message)


# -- the attempts' claims (what a Dask worker process writes and reads) ------------------------


def test_an_attempt_another_process_started_is_found_with_where_it_ran(tmp_path) -> None:
    """Dask re-runs a task whose worker died: the re-run must find the first
    attempt's claim, written by another process, and run nothing."""
    from corral.backends.dask.task import _ClaimLog

    died, alive = _ClaimLog(str(tmp_path)), _ClaimLog(str(tmp_path))
    assert died.claim("corral-ab12-7-12", 12, "Dask worker tcp://a:1 (pid 5)") is None
    assert alive.claim("corral-ab12-8-13", 13, "Dask worker tcp://b:1 (pid 6)") is None
    assert alive.claim("corral-ab12-7-12", 12, "Dask worker tcp://b:1 (pid 6)") == \
        "Dask worker tcp://a:1 (pid 5)"
    assert alive.claim("corral-ab12-7-14", 14, "Dask worker tcp://b:1 (pid 6)") is None  # a retry


def test_a_claim_line_read_half_written_is_finished_on_the_next_look(tmp_path) -> None:
    from corral.backends.dask.task import _ClaimLog

    reader = _ClaimLog(str(tmp_path))
    other = tmp_path / "elsewhere-1-abc"
    other.write_bytes(b"corral-ab12-3-9")  # the rest of the line is not written yet
    assert reader.claim("corral-ab12-4-10", 10, "here") is None
    with open(other, "ab") as handle:
        handle.write(b" Dask worker tcp://c:1 (pid 7)\n")
    assert reader.claim("corral-ab12-3-9", 9, "here") == "Dask worker tcp://c:1 (pid 7)"


def test_a_daemon_that_cannot_reach_its_dask_scheduler_says_so_in_one_line(tmp_path) -> None:
    from support.cli import Corral, assert_one_line_error

    cli = Corral(tmp_path / "home", tmp_path / "run")
    cli.config.write_text('[daemon]\nbackend = "dask"\naddress = "tcp://127.0.0.1:1"\n'
                          'backend_options = { connect_timeout = 1 }\n')
    outcome = cli("submit", "true")
    assert_one_line_error(outcome, 3, r"the corral daemon for .* could not start: cannot reach "
                                      r"the Dask scheduler at tcp://127\.0\.0\.1:1 within 1 s: ")


def test_auto_never_chooses_dask_though_it_is_installed(monkeypatch) -> None:
    """Dask's probe answers here, but "auto" would then start a LocalCluster."""
    from corral.backends import probe_backend, resolve_backend

    monkeypatch.setenv("PATH", "/nonexistent")  # no batch scheduler answers either
    assert probe_backend("dask").answers
    assert resolve_backend("auto") == "local"
