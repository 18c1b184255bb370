"""A worker that ran a lone job waits for its next request awake a moment
(corral.runtime.worker_process.lone_request): what the driver asks for, and
what the worker does with it."""

from __future__ import annotations

import os
import threading
from multiprocessing import Pipe

import pytest

import corral
import corral.backends.local.backend as local_backend

import jobs


@pytest.fixture
def lone_marks(monkeypatch):
    """Whether each job the local backend handed to an idle worker went as a lone one."""
    marks: list[bool] = []
    original = local_backend.lone_request

    def noted(request):
        marks[-1] = True
        return original(request)

    original_hand_to = local_backend.LocalBackend._hand_to

    def hand_to(self, worker, job_id, request, runs_command):
        marks.append(False)
        return original_hand_to(self, worker, job_id, request, runs_command)

    monkeypatch.setattr(local_backend, "lone_request", noted)
    monkeypatch.setattr(local_backend.LocalBackend, "_hand_to", hand_to)
    return marks


@pytest.mark.parametrize("cpus, expected", [(3, [True, True]), (2, [True, False]),
                                            (1, [False, False])])
def test_a_job_lingers_only_while_a_cpu_is_left_for_the_driver(lone_marks, tmp_path, cpus,
                                                               expected):
    with corral.Scheduler(cores=2) as sched:
        sched._backend._cpus = cpus
        # Two started workers (a starting one is sent its job as a queue instead).
        for job in [sched.submit(jobs.sleep_then_return, 0.3) for _ in range(2)]:
            job.result(timeout=60)
        lone_marks.clear()
        both = [sched.submit(jobs.sleep_then_return, 0.3) for _ in range(2)]
        assert [job.result(timeout=60) for job in both] == [0.3, 0.3]
    # The first of two jobs handed out together finds one CPU busy, the second two.
    assert lone_marks == expected


@pytest.fixture
def yields(monkeypatch):
    """How often the worker's queue gave up the CPU while it waited awake; a
    machine that always has a CPU to spare (the check reads /proc/loadavg)."""
    import corral.runtime.worker as worker

    counted = [0]

    def counting() -> None:
        counted[0] += 1

    monkeypatch.setattr(worker.os, "sched_yield", counting)
    monkeypatch.setattr(worker, "cpu_to_spare", lambda cpus: True)
    return counted


class _Queue:
    """A worker's request queue on real pipes, and a way to send it requests."""

    def __init__(self, linger: float) -> None:
        from corral.runtime.worker import _Queue as Queue

        self._requests_out, self._requests_in = Pipe(duplex=False)
        self._replies_out, self._replies_in = Pipe(duplex=False)
        self._doorbell_out, self._doorbell_in = os.pipe()
        self.queue = Queue(self._requests_out, self._replies_in, self._doorbell_out,
                           linger=linger)

    def run(self, job_id: int, lone: bool) -> None:
        """File a request for *job_id*, as a lone one or not, and start it."""
        from corral.runtime.worker_process import lone_request

        request = ("call", job_id, "/nowhere", b"", (), (), None, None)
        self.queue._take(lone_request(request) if lone else request)
        entry = self.queue.next()
        assert entry is not None and entry[0][1] == job_id

    def next_sent_after(self, job_id: int, delay: float) -> None:
        """Wait for the next request, which is sent *delay* seconds from now."""
        import pickle

        request = ("call", job_id, "/nowhere", b"", (), (), None, None)
        sender = threading.Timer(delay, self._requests_in.send_bytes, [pickle.dumps(request)])
        sender.start()
        entry = self.queue.next(idle_exit=60)
        sender.join()
        assert entry is not None and entry[0][1] == job_id

    def close(self) -> None:
        os.close(self._doorbell_in)  # (the doorbell thread ends with it)
        os.close(self._doorbell_out)
        for end in (self._requests_out, self._requests_in, self._replies_out, self._replies_in):
            end.close()


@pytest.fixture
def queue():
    made = _Queue(linger=0.3)
    yield made
    made.close()


def test_a_worker_waits_awake_after_a_lone_job_and_asleep_after_another(queue, yields):
    queue.run(1, lone=True)
    queue.next_sent_after(2, 0.1)  # caught while it waited awake
    assert yields[0] > 0
    yields[0] = 0
    queue.run(3, lone=False)
    queue.next_sent_after(4, 0.1)
    assert yields[0] == 0


def _lingered(queue, yields, job_id: int, delay: float) -> bool:
    """Whether the worker waited awake after lone job *job_id*, whose next
    request came *delay* seconds later."""
    yields[0] = 0
    queue.run(job_id, lone=True)
    queue.next_sent_after(job_id + 1, delay)
    return yields[0] > 0


def test_a_worker_lingers_less_and_less_while_that_catches_nothing(queue, yields):
    """A caller that pauses between its jobs gains nothing by a linger: after
    each miss twice as many lone jobs pass without one, after each catch half
    as many."""
    assert _lingered(queue, yields, 1, 0.5)  # awake for 0.3 s in vain, then asleep
    assert not _lingered(queue, yields, 3, 0.05)  # one passed
    assert _lingered(queue, yields, 5, 0.5)  # tried again, in vain
    assert not _lingered(queue, yields, 7, 0.05)
    assert not _lingered(queue, yields, 9, 0.05)  # two passed
    assert _lingered(queue, yields, 11, 0.05)  # tried again, and caught: 4 becomes 2
    assert _lingered(queue, yields, 13, 0.5)
    assert not _lingered(queue, yields, 15, 0.05)
    assert not _lingered(queue, yields, 17, 0.05)  # two passed
    assert _lingered(queue, yields, 19, 0.05)


def test_a_worker_does_not_linger_without_a_cpu_to_spare_or_when_told_never(
        queue, yields, monkeypatch):
    import corral.runtime.worker as worker

    monkeypatch.setattr(worker, "cpu_to_spare", lambda cpus: False)
    assert not _lingered(queue, yields, 1, 0.05)
    monkeypatch.setattr(worker, "cpu_to_spare", lambda cpus: True)
    queue.queue.linger = 0.0
    assert not _lingered(queue, yields, 3, 0.05)


@pytest.mark.parametrize("stopped", ["perf_counter", "monotonic", "clock_gettime"])
def test_a_stopped_clock_does_not_keep_a_worker_awake(queue, yields, monkeypatch, stopped):
    """A job that left the time module's clocks frozen (freezegun) must not
    make the worker's wait long: it times it by a clock taken at its start,
    and looks a bounded number of times whatever the clock says."""
    import corral.runtime.worker as worker

    monkeypatch.setattr(worker.time, stopped, lambda *_: 1000.0)
    assert queue.queue._awake_until_request(0.001) is False
    assert 0 < yields[0] <= 0.001 * worker.LOOKS_PER_SECOND + 1
    monkeypatch.setattr(worker, "_monotonic_clock", lambda *_: 1000.0)  # even that one
    yields[0] = 0
    assert queue.queue._awake_until_request(0.001) is False
    assert yields[0] == 0.001 * worker.LOOKS_PER_SECOND + 1


@pytest.mark.parametrize("layout, cpus", [
    ({}, None),                                                       # nothing to read
    ({"cgroup": "0::/app.slice/job\n", "cpu.max": "max 100000"}, None),  # v2, no limit
    ({"cgroup": "0::/app.slice/job\n", "app.slice/cpu.max": "150000 100000",
      "app.slice/job/cpu.max": "max 100000"}, 1.5),                   # v2, a parent's limit
    ({"cgroup": "0::/\n", "cpu.max": "50000 100000"}, 0.5),           # v2, a container's
    ({"cgroup": "4:cpu,cpuacct:/docker/x\n1:name=systemd:/\n",
      "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "200000",
      "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
      "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 2.0),
    ({"cgroup": "4:cpu:/x\n", "cpu/x/cpu.cfs_quota_us": "garbled"}, None),
    ({"cgroup": "0::/\n", "cpu.max": "9" * 400 + " 1"}, None),  # too large for a float
    ({"cgroup": "4:cpu:/x\n", "cpu/x/cpu.cfs_quota_us": "9" * 400,
      "cpu/x/cpu.cfs_period_us": "1"}, None),
])
def test_a_cgroups_cpu_quota_is_read(tmp_path, layout, cpus):
    """Under a CPU quota (a container's --cpus, a Kubernetes limit), a
    worker lingering as if every CPU of the machine were its own took the
    quota its driver needed."""
    from corral.runtime.worker_process import cpu_quota

    mounted = tmp_path / "sys"
    mounted.mkdir()
    for name, text in layout.items():
        if name == "cgroup":
            continue
        (mounted / name).parent.mkdir(parents=True, exist_ok=True)
        (mounted / name).write_text(text)
    listed = tmp_path / "cgroup"
    if "cgroup" in layout:
        listed.write_text(layout["cgroup"])
    assert cpu_quota(str(listed), str(mounted)) == cpus


@pytest.mark.parametrize("loadavg, spare", [
    ("0.52 0.41 0.30 1/312 4242\n", True),   # this process alone
    ("0.52 0.41 0.30 2/312 4242\n", True),   # and one more: a CPU of the two is free
    ("0.52 0.41 0.30 3/312 4242\n", False),  # two more: both CPUs are wanted
    ("0.52 0.41 0.30\n", False),             # unreadable: not sure, so no
    ("", False),
])
def test_a_worker_lingers_only_with_a_cpu_to_spare(tmp_path, loadavg, spare):
    from corral.runtime.worker import cpu_to_spare

    path = tmp_path / "loadavg"
    path.write_text(loadavg)
    assert cpu_to_spare(2, str(path)) is spare
    assert cpu_to_spare(2, str(tmp_path / "missing")) is False


@pytest.mark.parametrize("given", ["off", "nan", "-1", "1", "inf"])
def test_a_bad_linger_setting_is_refused_when_the_scheduler_is_made(monkeypatch, given):
    """One that is no number of seconds, or one of hours, which would keep a
    CPU busy for nothing: refused by name, not taken for the default."""
    monkeypatch.setenv("CORRAL_WORKER_LINGER_S", given)
    with pytest.raises(ValueError) as refused:
        corral.Scheduler(cores=1)
    assert str(refused.value) == (
        f"CORRAL_WORKER_LINGER_S={given!r}: give a number of seconds from 0 to 0.01 that a "
        "worker waits awake for its next job after a lone one (0: never), or unset it for the "
        "default")


@pytest.mark.parametrize("given, seconds", [(None, 0.0005), ("", 0.0005), ("0", 0.0),
                                            (" 0.002 ", 0.002), ("0.01", 0.01)])
def test_a_linger_setting_is_read_by_each_worker(monkeypatch, given, seconds):
    from corral.runtime.worker import _linger

    if given is None:
        monkeypatch.delenv("CORRAL_WORKER_LINGER_S", raising=False)
    else:
        monkeypatch.setenv("CORRAL_WORKER_LINGER_S", given)
    assert _linger() == seconds
