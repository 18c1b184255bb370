"""Grid Engine's pieces for the batch base: :class:`SgeScheduler` builds qsub's
argv from a request and maps the base's questions onto
:mod:`~corral.backends.batch.sge.commands`."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from corral.backends.batch.scheduler import (BatchScheduler, ClusterLimits, Meaning, NativeRow,
                                             NeverKind, NeverStarts, SubmitRequest, number)
from corral.backends.batch.sge import OWN_OPTIONS, commands
from corral.spec import Resources

__all__ = ["SgeScheduler"]

_RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


class SgeScheduler(BatchScheduler):
    """Son of Grid Engine 8.1 and its kin (UGE, OGS): qsub, qstat -xml, qacct,
    qdel, qhold, qrls, qconf."""

    name: ClassVar[str] = "sge"
    title: ClassVar[str] = "SGE"
    template: ClassVar[Path] = Path(__file__).with_name("job.sh.template")
    array_index_base: ClassVar[int] = 1
    #: Exit status 100 puts the job in error state (Eqw), which keeps its
    #: ``-hold_jid`` children waiting; any other status releases them.
    failed_exit_status: ClassVar[int] = 100
    failed_jobs_stay: ClassVar[bool] = True
    #: SGE's defaults: max_aj_tasks 75000; finished jobs leave qstat at once,
    #: and qacct knows them after the accounting flush time (15 s by default).
    default_limits: ClassVar[ClusterLimits] = ClusterLimits(75000, 20.0, True)
    forgotten_words: ClassVar[str] = "SGE lists only pending and running jobs"
    own_options: ClassVar[dict[str, tuple[Any, str]]] = OWN_OPTIONS

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        counted = self.settings["gpus_counted_per"]
        if counted not in ("slot", "job"):
            raise ValueError(f"gpus_counted_per={counted!r} must be 'slot' (the gpu complex is "
                             "consumable YES) or 'job' (consumable JOB)")
        for option, (default, _) in OWN_OPTIONS.items():
            if option == "gpus_counted_per":
                continue
            value = self.settings[option]
            if not isinstance(value, str) or not _RESOURCE_NAME.match(value):
                what = "parallel environment" if option.startswith("parallel") else "resource"
                raise ValueError(f"{option}={value!r} must be the name of an SGE {what} "
                                 f"(letters, digits, '_', '.', '-'; e.g. {default!r})")

    def _per_slot(self, resources: Resources) -> bool:
        return self.settings["gpus_counted_per"] == "slot" and resources.cores > 1

    def _gpus_asked(self, resources: Resources) -> int:
        """The N of ``-l gpu=N``: SGE multiplies a consumable by the slots of a
        parallel job, so 2 GPUs on 4 cores asked ``gpu=2`` were 8 (attack review)."""
        return resources.gpus // resources.cores if self._per_slot(resources) else resources.gpus

    def request_problem(self, resources: Resources) -> str | None:
        if resources.gpus and self._per_slot(resources) and resources.gpus % resources.cores:
            return (f"asks for {resources.gpus} GPUs on {resources.cores} cores, but Grid Engine "
                    f"counts -l {self.settings['gpu_resource']}=N per slot: ask for a multiple "
                    f"of the cores, or, where the site's {self.settings['gpu_resource']} complex "
                    "is consumable JOB, set backend_options gpus_counted_per='job'")
        return None

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        """qsub with one argument per value, never ``-b y`` (which would parse
        them again in a shell): the script is a file."""
        resources, placement = request.resources, request.placement
        # -V: the job sees the driver's environment, as sbatch's default does on
        # Slurm, so a script behaves alike on both; -r n: corral retries, not SGE;
        # -C '': no "#$" line of the setup is read as a qsub option.
        argv = ["qsub", "-terse", "-V", "-r", "n", "-w", "e", "-C", "", "-S", "/bin/bash",
                "-wd", os.path.dirname(request.script), "-N", commands.job_name(request.name),
                "-o", request.output, "-j", "y"]
        if resources.cores > 1:
            argv += ["-pe", self.settings["parallel_environment"], str(resources.cores)]
        if resources.memory_mb is not None:
            per_slot = commands.per_slot_mb(resources.memory_mb, resources.cores)
            argv += ["-l", f"{self.settings['memory_resource']}={per_slot}M"]
        if request.time_limit_s is not None:
            argv += ["-l", f"h_rt={math.ceil(request.time_limit_s)}"]
        if resources.gpus:
            argv += ["-l", f"{self.settings['gpu_resource']}={self._gpus_asked(resources)}"]
        for flag, value in (("-q", placement.partition), ("-P", placement.account),
                            ("-l", placement.constraint)):
            if value is not None:
                argv += [flag, value]
        if request.array_size is not None:
            argv += ["-t", f"1-{request.array_size}"]
            if request.throttle is not None:
                argv += ["-tc", str(request.throttle)]
        if request.dependencies:
            # -hold_jid names whole jobs: a child of one array task waits for the array.
            jobs = dict.fromkeys(commands.job_number(native) for native in request.dependencies)
            argv += ["-hold_jid", ",".join(jobs)]
        return [*argv, *placement.extra_flags, request.script]

    def explain_refusal(self, request: SubmitRequest, message: str) -> str:
        if "no suitable queues" not in message:
            return message
        resources = request.resources
        asked = [f"{resources.cores} cores (-pe {self.settings['parallel_environment']})"]
        if resources.memory_mb is not None:
            asked.append(f"{resources.memory_mb} MB ({self.settings['memory_resource']})")
        if resources.gpus:
            asked.append(f"{resources.gpus} GPUs ({self.settings['gpu_resource']})")
        if request.time_limit_s is not None:
            asked.append(f"h_rt {math.ceil(request.time_limit_s)} s")
        if request.placement.partition:
            asked.append(f"queue {request.placement.partition}")
        return f"no queue can ever run it as asked ({', '.join(asked)}): {message}"

    parse_submit = staticmethod(commands.parse_qsub)
    status_argv = staticmethod(commands.qstat_argv)
    parse_status = staticmethod(commands.parse_qstat)
    parse_accounting = staticmethod(commands.parse_qacct)

    def array_task_id(self, job_id: str, index: int) -> str:
        return f"{job_id}.{index}"

    def granted_time_s(self, seconds: float) -> float:
        return float(math.ceil(seconds))

    accounting_takes_one_job = True  # qacct -j: one job (all its tasks)

    def accounting_argv(self, native_ids: Sequence[str]) -> list[str] | None:
        return commands.qacct_argv(native_ids[0]) if native_ids else None

    def limits_argv(self) -> list[str] | None:
        return ["qconf", "-sconf"]

    def parse_limits(self, stdout: str) -> ClusterLimits:
        config = commands.parse_sconf(stdout)
        tasks = config.get("max_aj_tasks", "")
        reporting = dict(part.partition("=")[::2]
                         for part in config.get("reporting_params", "").split())
        flush = max(_seconds(reporting.get(key, "")) for key in
                    ("flush_time", "accounting_flush_time"))
        return ClusterLimits(
            max_array_tasks=number(tasks) or 75000,
            # The query forgets at once; qacct knows a job once accounting is flushed.
            forget_after_s=flush + 5.0,
            accounting=reporting.get("accounting", "true").lower() == "true")

    def meaning(self, row: NativeRow) -> Meaning | None:
        return commands.meaning_of(row)

    def never_starts(self, row: NativeRow) -> NeverStarts | None:
        if row.reason == commands.PREDECESSOR_FAILED:
            return NeverStarts(NeverKind.DEPENDENCY_FAILED, "a job it depends on failed")
        return None

    def is_pending(self, row: NativeRow) -> bool:
        return "q" in row.state and "E" not in row.state

    def is_held(self, row: NativeRow) -> bool:
        return "h" in row.state

    def cancel_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qdel", *native_ids]

    def signal_argv(self, native_ids: Sequence[str]) -> list[str]:
        # SGE signals a job only around a suspend or a kill (qsub -notify), and
        # -notify's SIGUSR1, to the job's whole process group, kills what a call
        # started that does not handle it (re-attack review): abort deletes.
        return ["qdel", *native_ids]

    signal_ends_job: ClassVar[bool] = True

    def chains_on(self, native_id: str) -> bool:
        # -hold_jid names whole jobs: a child of one array task would wait for (and
        # fail with) every task of the array, so it waits for its own parent in corral.
        return "." not in native_id

    def hold_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qhold", *native_ids]

    def release_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qrls", *native_ids]


def _seconds(text: str) -> float:
    """Seconds of SGE's ``HH:MM:SS`` (0 if unreadable)."""
    parts = [number(part) for part in text.split(":")]
    if any(part is None for part in parts):
        return 0.0
    return float(sum(part * 60 ** i for i, part in enumerate(reversed(parts)) if part))
