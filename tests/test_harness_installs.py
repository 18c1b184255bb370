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
