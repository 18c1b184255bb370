"""Helpers the tests import by name; fixtures stay in ``tests/conftest.py``.

* :mod:`support.waiting` — poll with a deadline (``wait_until``) and wait for
  a scheduler's control loop to go round (``loop_barrier``), never a bare sleep;
* :mod:`support.processes` — which of some pids still run;
* :mod:`support.cli` — the real ``corral`` executable, and cleaning up the
  daemons it starts.

``conftest.py`` is pytest's plugin file, not a module to import: ``from
conftest import ...`` works only while pytest happens to put ``tests/`` on
``sys.path`` under the name ``conftest`` (not with ``--import-mode=importlib``,
nor with a second ``conftest.py`` in a subfolder).
"""
