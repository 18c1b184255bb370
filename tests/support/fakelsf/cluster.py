"""Starting and stopping the fake LSF in a test, and reading what it saw."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from support.fakebatch.cluster import FakeBatch

__all__ = ["FakeLsf", "BIN"]

BIN = Path(__file__).with_name("bin")


@dataclass
class FakeLsf(FakeBatch):
    """One fake LSF cluster: its state file under *root* (the engine's,
    :class:`FakeBatch`'s call log and executors); *forget_s* is its CLEAN_PERIOD,
    *minute_s* how long ``bsub -W 1`` lets a job run; *reserve_per_task*: its
    ``bparams -a`` says RESOURCE_RESERVE_PER_TASK = Y."""

    minute_s: float = 60.0
    reserve_per_task: bool = False

    def environ(self) -> dict[str, str]:
        return {"FAKELSF_STATE": os.fspath(self.state),
                "FAKELSF_CLEAN_PERIOD": str(self.forget_s), "FAKELSF_SLOTS": str(self.slots),
                "FAKELSF_MINUTE_S": str(self.minute_s),
                "FAKELSF_RESERVE_PER_TASK": "Y" if self.reserve_per_task else "N",
                "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def bjobs(self, *ids: str) -> dict[str, dict]:
        """Every record ``bjobs -a`` prints (or those of *ids*), by native id."""
        done = self.run("bjobs", "-json", "-o", "jobid jobindex stat exit_code exit_reason "
                        "pend_reason job_name", "-a", *ids)
        if (done.returncode, done.stderr) == (255, "No job found\n"):
            return {}
        assert done.returncode == 0, done.stderr
        records = json.loads(done.stdout)["RECORDS"]
        return {(r["JOBID"] if r["JOBINDEX"] == "0" else f"{r['JOBID']}[{r['JOBINDEX']}]"): r
                for r in records}

    def qstat(self, *ids: str) -> dict[str, dict]:
        """What :meth:`FakeBatch.stop` asks: each job's engine state ("F": finished)."""
        return {native: {"state": "F" if r["STAT"] in ("DONE", "EXIT") else r["STAT"]}
                for native, r in self.bjobs(*ids).items()}

    def stop(self, timeout: float = 15.0) -> None:
        """Kill every unfinished job (bkill), then wait for the executors to end
        as :meth:`FakeBatch.stop` does."""
        if self.state.exists():
            unfinished = [n for n, task in self.qstat().items() if task["state"] != "F"]
            if unfinished:
                self.run("bkill", *unfinished)
        super().stop(timeout)
