"""The harness scripts' package installs share one lock (``scripts/lib/apt.sh``).

pytest's workers start Slurm, Grid Engine, OpenPBS and Chromium at once on a fresh
machine; two apt-gets at once fail on dpkg's lock, and a CI run once lost its four
Grid Engine tests to "Could not get lock /var/lib/dpkg/lock-frontend". These tests run
the library against a stand-in ``apt-get`` on PATH that fails the way apt does when
another apt runs beside it, so they show what a CI run would see without touching
the machine's packages.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

APT_LIB = Path(__file__).resolve().parent.parent / "scripts" / "lib" / "apt.sh"

#: A stand-in apt-get: it logs each call, refuses (as apt does) while another call is
#: inside, and fails the first ``$BUSY_TIMES`` calls as if an outside apt held dpkg's lock.
FAKE_APT_GET = textwrap.dedent("""\
    #!/usr/bin/env bash
    echo "$*" >> "$APT_DIR/calls"
    if ! mkdir "$APT_DIR/inside" 2>/dev/null; then
        echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1" >&2
        echo overlap >> "$APT_DIR/overlaps"
        exit 100
    fi
    trap 'rmdir "$APT_DIR/inside"' EXIT
    n=$(cat "$APT_DIR/busy" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
        echo $((n - 1)) > "$APT_DIR/busy"
        echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1" >&2
        exit 100
    fi
    for arg in "$@"; do
        if [ "$arg" = no-such-package ]; then
            echo "E: Unable to locate package no-such-package" >&2
            exit 100
        fi
        if [ "$arg" = later-package ] && [ ! -e "$APT_DIR/updated" ]; then
            echo "E: Unable to locate package later-package" >&2
            exit 100
        fi
    done
    [ "$1 $2" = "-o DPkg::Lock::Timeout=600" ] && [ "$3" = update ] && touch "$APT_DIR/updated"
    sleep 0.2
    exit 0
""")


@pytest.fixture
def fake_apt(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(FAKE_APT_GET)
    apt_get.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "APT_DIR": str(tmp_path),
            "CORRAL_APT_LOCK_FILE": str(tmp_path / "apt.lock"), "CORRAL_APT_RETRY_SECONDS": "0.1"}


def start_install(env: dict[str, str], *packages: str) -> subprocess.Popen[str]:
    script = f'set -euo pipefail; source "{APT_LIB}"; apt_install {" ".join(packages)}'
    return subprocess.Popen(["bash", "-c", script], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_installs_started_together_take_turns_instead_of_failing_on_dpkgs_lock(
        fake_apt: dict[str, str], tmp_path: Path) -> None:
    installs = [start_install(fake_apt, f"pkg{i}") for i in range(4)]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in installs]
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
    assert not (tmp_path / "overlaps").exists(), "two apt-gets ran at once"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert sorted(c.split()[-1] for c in calls) == ["pkg0", "pkg1", "pkg2", "pkg3"]


def test_an_install_waits_while_an_apt_outside_corral_holds_the_lock(
        fake_apt: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "busy").write_text("2")
    install = start_install(fake_apt, "gridengine-master")
    assert install.wait(timeout=60) == 0, install.stderr.read() if install.stderr else ""
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[-1].endswith("install -y -qq gridengine-master")
    assert len(calls) >= 3


def test_a_package_not_in_the_lists_yet_is_installed_after_one_update(
        fake_apt: dict[str, str], tmp_path: Path) -> None:
    install = start_install(fake_apt, "--no-install-recommends", "later-package")
    assert install.wait(timeout=60) == 0, install.stderr.read() if install.stderr else ""
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[2] for c in calls] == ["install", "update", "install"]


def test_a_package_that_does_not_exist_fails_with_apts_own_words(
        fake_apt: dict[str, str]) -> None:
    install = start_install(fake_apt, "no-such-package")
    assert install.wait(timeout=60) != 0
    said = install.stderr.read() if install.stderr else ""
    assert "Unable to locate package no-such-package" in said


BUILD_OPENPBS = APT_LIB.parent.parent / "openpbs" / "build-openpbs.sh"


def _build_openpbs(tmp_path: Path, **env: str) -> subprocess.Popen:
    """build-openpbs.sh into a prefix of *tmp_path*, without apt, from a source
    tarball that does not exist: a build that starts fails at once, saying so."""
    return subprocess.Popen(
        ["bash", str(BUILD_OPENPBS), str(tmp_path / "no-such-source.tar.gz")],
        env={**os.environ, "PBS_PREFIX": str(tmp_path / "pbs"), "BUILD_DIR": str(tmp_path / "b"),
             "SKIP_APT": "1", "CORRAL_OPENPBS_BUILD_LOCK": str(tmp_path / "lock"), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_an_openpbs_build_waits_for_the_one_running_and_redoes_one_cut_short(tmp_path):
    """The session starts OpenPBS's build in the background and the first OpenPBS
    test calls the script too: the second waits for the first, then finds it
    installed; a build cut short leaves a marker that has the next one build again
    rather than trust a half-installed prefix."""
    import fcntl

    qsub = tmp_path / "pbs" / "bin" / "qsub"
    qsub.parent.mkdir(parents=True)
    qsub.write_text("#!/bin/sh\n")
    qsub.chmod(0o755)
    with open(tmp_path / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build under way
        waiting = _build_openpbs(tmp_path)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=1)
    out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and "OpenPBS already installed at" in out
    Path(f"{tmp_path / 'pbs'}.corral-build-in-progress").touch()  # a build was cut short
    again = _build_openpbs(tmp_path)
    out, _ = again.communicate(timeout=30)
    assert again.returncode == 1 and "source tarball not found" in out
