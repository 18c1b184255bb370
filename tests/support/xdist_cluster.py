"""Two pytest-xdist workers, with every test on a real cluster in one of them.

Real clusters are started once per test session (Grid Engine and OpenPBS are one per
machine), and their tests must run one at a time. xdist's own ``xdist_group`` mark does
not reach its scheduler under pytest 9 (it rewrites a node id pytest no longer reads), so
the scheduler here tells a cluster test by its node id: a module of cluster tests, or a
parameter that names a real cluster (a contract-suite harness, the ``slurm`` fixture's
``accounting on/off``). tests/test_architecture.py checks that this rule and the
``cluster`` mark agree.
"""

from __future__ import annotations

from typing import Any

#: Modules every test of which runs on a real cluster (or near one, in order).
CLUSTER_MODULES = ("tests/test_slurm.py", "tests/test_slurm_cli.py", "tests/test_sge.py",
                   "tests/test_pbs.py", "tests/test_pbs_torque.py", "tests/test_dask.py")


def cluster_parameters() -> tuple[str, ...]:
    """Parameter ids that put a test on a real cluster."""
    from support.harnesses import harnesses

    return (*(f"[{name}]" for name, spec in harnesses().items() if spec.needs_cluster),
            "[accounting off]", "[accounting on]")


def is_cluster_test(nodeid: str) -> bool:
    path = nodeid.split("::", 1)[0]
    return path.endswith(CLUSTER_MODULES) or any(
        parameter in nodeid for parameter in cluster_parameters())


def make_scheduler(config: Any, log: Any) -> Any:
    """xdist's load scheduling, with the cluster tests one unit of work; in the
    fast lane (``-m "not cluster"``) work stealing, whose idle workers take
    tests from busy ones, so that the lane does not end waiting on one worker's
    long tail."""
    from xdist.scheduler import LoadScopeScheduling, WorkStealingScheduling

    if "notcluster" in (config.option.markexpr or "").replace(" ", ""):
        return WorkStealingScheduling(config, log)

    class ClusterTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "cluster" if is_cluster_test(nodeid) else nodeid

    return ClusterTestsTogether(config, log)
