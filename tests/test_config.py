"""Config files and profiles: what is read, what wins, and errors that say where."""

from __future__ import annotations

import os
import re
import socket
import textwrap
from pathlib import Path

import pytest

import corral
from corral.config import ConfigError, SmtpSettings, load_config, user_config_path
from corral.errors import CorralError


@pytest.fixture
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's config file, in the platform's place under a private
    $XDG_CONFIG_HOME (not written yet: a file $CORRAL_CONFIG names must exist)."""
    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    path = tmp_path / "home" / "corral" / "corral.toml"
    assert user_config_path() == path
    return path


@pytest.fixture
def project(tmp_path: Path, user_file: Path) -> Path:
    """A working directory whose corral.toml is the local file (not written yet)."""
    path = tmp_path / "project"
    path.mkdir()
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_local_file_overrides_the_user_file_key_by_key(user_file: Path, project: Path) -> None:
    write(user_file, """
        [smtp]
        host = "mail.example.org"
        port = 587
        starttls = true
        from = "me@example.org"

        [profiles.short]
        walltime = "30m"
        memory = "2G"

        [profiles.gpu]
        gpus = 1
    """)
    local = write(project / "corral.toml", """
        [smtp]
        port = 2525
        starttls = false
        timeout = "1m"

        [profiles.short]
        memory = "4G"
        cores = 2
    """)

    config = load_config(cwd=project)

    assert config.profile("short") == {"walltime": "30m", "memory": "4G", "cores": 2}
    assert config.profile("gpu") == {"gpus": 1}
    assert config.smtp == SmtpSettings(host="mail.example.org", port=2525,
                                       sender="me@example.org", starttls=False, timeout=60.0)
    assert config.sources == (user_file, local)


def test_the_site_file_is_read_first_and_the_user_file_overrides_it(
        tmp_path: Path, user_file: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sysadmin's review: there was no file for a whole site, so each user had
    to copy the site's scheduler table and profiles into their own."""
    site = write(tmp_path / "etc" / "corral.toml", """
        [profiles.short]
        walltime = "30m"
        memory = "2G"

        [profiles.site_only]
        cores = 4
    """)
    monkeypatch.setenv("CORRAL_SITE_CONFIG", str(site))
    write(user_file, """
        [profiles.short]
        memory = "4G"
    """)
    config = load_config(cwd=project)
    assert config.profile("short") == {"walltime": "30m", "memory": "4G"}
    assert config.profile("site_only") == {"cores": 4}
    assert config.sources == (site, user_file)
    write(site, "[profiles.short]\nmemroy = 3\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(site))}:2: profiles\.short\.memroy: "
                                          r"unknown job option 'memroy'"):
        load_config(cwd=project)
    monkeypatch.setenv("CORRAL_SITE_CONFIG", "")  # none: the machine's is not read
    assert load_config(cwd=project).profile("short") == {"memory": "4G"}


def test_local_file_is_read_from_the_current_directory(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(project / "corral.toml", '[profiles.quick]\nwalltime = "5m"\n')
    monkeypatch.chdir(project)
    assert load_config().profile("quick") == {"walltime": "5m"}


def test_corral_config_names_the_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "elsewhere.toml", '[profiles.mine]\ncores = 3\n')
    monkeypatch.setenv("CORRAL_CONFIG", str(path))

    assert user_config_path() == path
    assert load_config(cwd=tmp_path).profile("mine") == {"cores": 3}


def test_without_corral_config_the_platform_folder_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    assert user_config_path() == platformdirs.user_config_path("corral") / "corral.toml"


def test_no_files_give_an_empty_config_without_smtp(project: Path) -> None:
    config = load_config(cwd=project)

    assert dict(config.profiles) == {}
    assert config.sources == ()
    assert config.smtp is None  # notify= is refused: see test_job_endings


def test_an_empty_smtp_table_gives_the_default_smtp(project: Path) -> None:
    write(project / "corral.toml", "[smtp]\n")
    config = load_config(cwd=project)

    assert (config.smtp.host, config.smtp.port) == ("localhost", 25)
    assert config.smtp.sender == f"corral@{socket.gethostname()}"
    assert config.smtp.password is None


def test_profile_values_pass_through_raw(project: Path) -> None:
    write(project / "corral.toml", """
        [profiles.night]
        walltime = "1:30:00"
        memory = "1.5GB"
        notify = ["ann@example.org", "bob@example.org"]
        notify_on = "end"
        env = { OMP_NUM_THREADS = "4" }
        priority = -2
    """)
    config = load_config(cwd=project)

    night = config.profile("night")
    assert night == {"walltime": "1:30:00", "memory": "1.5GB",
                     "notify": ["ann@example.org", "bob@example.org"], "notify_on": "end",
                     "env": {"OMP_NUM_THREADS": "4"}, "priority": -2}
    night["notify"].append("eve@example.org")  # a copy: the config does not change
    assert config.profile("night")["notify"] == ["ann@example.org", "bob@example.org"]


def test_password_comes_from_the_named_environment_variable(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_TEST_SMTP_PASSWORD", "s3cret")
    write(project / "corral.toml", """
        [smtp]
        username = "me"
        password_env = "CORRAL_TEST_SMTP_PASSWORD"
    """)
    smtp = load_config(cwd=project).smtp

    assert (smtp.username, smtp.password) == ("me", "s3cret")
    assert "s3cret" not in repr(smtp)


# Each bad file: its text, then the line, key and problem the error must name.
BAD_FILES = {
    "syntax error": (
        '[profiles.short]\nwalltime = "30m"\nmemory = \n',
        3, None, "invalid TOML at column 10: Invalid value"),
    "byte-order mark": (
        '\ufeff[profiles.short]\nwalltime = "30m"\n',
        1, None, "begins with a byte-order mark (U+FEFF), which TOML does not allow; save "
                 "the file as UTF-8 without one"),
    "nested too deeply": (
        "[profiles.short]\nname = " + "[" * 100_000 + "]" * 100_000 + "\n",
        2, None, "invalid TOML: values nested too deeply (arrays or tables inside each "
                    "other)"),
    "profile without a name": (
        '[profiles.""]\ncores = 2\n',
        1, 'profiles.""', 'a profile needs a name: [profiles.short], not [profiles.""]'),
    "unknown table": (
        '[smpt]\nhost = "x"\n',
        1, "smpt", "unknown table 'smpt'; did you mean 'smtp'?"),
    "unknown option": (
        '[smtp]\nport = 25\n\n[profiles.short]\nwalltime = "30m"\n\nmemroy = "2G"\n',
        7, "profiles.short.memroy", "unknown job option 'memroy'; did you mean 'memory'?"),
    "bad memory": (
        '[profiles.short]\nmemory = "lots"\n',
        2, "profiles.short.memory", "memory='lots' is not a memory size; use an int of "),
    "profile not a table": (
        '[profiles]\nshort = "30m"\n',
        2, "profiles.short", "a profile must be a table of job options ([profiles.short])"),
    "after in a profile": (
        '[profiles.chain]\nafter = "prepare"\n',
        2, "profiles.chain.after", "after= names jobs of one run, so it cannot be part of a"),
    "profile in a profile": (
        '[profiles.nested]\nprofile = "big"\n',
        2, "profiles.nested.profile",
        "a profile cannot include another profile; copy the options it needs into it"),
    "every bad profile at once": (
        '[profiles.gpu]\ngpus = 1\n\n[profiles.bad]\nmemory = "4 gigs"\n\n'
        '[profiles.typo]\nmemroy = "4G"\n',
        5, "profiles.bad.memory",
        "memory='4 gigs' is not a memory size; use an int of megabytes (64 or more) or a "
        "string such as '512M', '4G', '1.5GB', '2T'; and 1 more: line 8: profiles.typo.memroy: "
        "unknown job "
        "option 'memroy'; did you mean 'memory'?"),
    "memory of a few megabytes": (
        '[profiles.tiny]\nmemory = 4\n',
        2, "profiles.tiny.memory", 'memory = 4 is megabytes without a unit, so little that '
                                   'gigabytes are likely meant: write "4G" (or "4M" if megabytes '
                                   'are meant)'),
    "walltime without a unit": (
        '[profiles.tiny]\nwalltime = 10\n',
        2, "profiles.tiny.walltime", 'walltime = 10 is ambiguous without a unit: write "10s" '
                                     'for seconds or "10m" for minutes'),
    "timeout without a unit": (
        '[profiles.tiny]\ntimeout = 1.5\n',
        2, "profiles.tiny.timeout", 'timeout = 1.5 is ambiguous without a unit: write "1.5s"'),
    "walltime of zero": (  # (re-attack: "write '0s'" was offered)
        '[profiles.tiny]\nwalltime = 0\n',
        2, "profiles.tiny.walltime", "walltime=0 must be a positive duration"),
    "inline table": (
        '[profiles]\nquick = { walltime = "5m", cores = 0 }\n',
        2, "profiles.quick.cores", "cores=0 must be an int >= 1"),
    "dotted key": (
        '[profiles]\nquick.walltime = "5m"\nquick.walltime2 = "5m"\n',
        3, "profiles.quick.walltime2", "unknown job option 'walltime2'; did you mean 'walltime'?"),
    "port too large": (
        '[smtp]\nhost = "mail"\nport = 70000\n',
        3, "smtp.port", "port=70000 must be an int from 1 to 65535"),
    "port as a string": (
        '[smtp]\nport = "25"\n',
        2, "smtp.port", "port='25' must be an int from 1 to 65535"),
    "unknown smtp key": (
        '[smtp]\nhost = "mail"\nprot = 25\n',
        3, "smtp.prot", "unknown smtp setting 'prot'; did you mean 'port'?"),
    "password in the file": (
        '[smtp]\nusername = "me"\npassword = "hunter2"\n',
        3, "smtp.password", "passwords are not stored in config files"),
    "ssl with starttls": (
        '[smtp]\nssl = true\nstarttls = true\n',
        2, "smtp.ssl", "ssl and starttls exclude each other"),
    "sender with a line break": (  # (attack review: every notice failed to compose)
        '[smtp]\nfrom = "a@b.org\\nBcc: x@y.org"\n',
        2, "smtp.from", "from='a@b.org\\nBcc: x@y.org' must be an e-mail address"),
    "bad timeout": (
        '[smtp]\ntimeout = "soon"\n',
        2, "smtp.timeout", "timeout='soon' is not a duration"),
    "unknown daemon key": (
        '[daemon]\ncores = 2\nqueue = { gpu = 1 }\n',
        3, "daemon.queue", "unknown daemon setting 'queue'; did you mean 'queues'?"),
    "daemon queue capacity": (
        '[daemon]\nqueues = { gpu = 0 }\n',
        2, "daemon.queues", "queues.gpu=0 must be an int from 1 to 2147483647"),
    "daemon queue without a name": (  # (attack review: it stopped the daemon, naming no file)
        '[daemon]\nqueues = { "" = 1 }\n',
        2, "daemon.queues", "queues: '' is not a queue name; give each queue a name"),
    "daemon cores of 20 digits": (  # (attack review: "int too large to convert", no file)
        '[daemon]\ncores = 100000000000000000000\n',
        2, "daemon.cores", "cores=100000000000000000000 must be an int from 1 to 2147483647"),
    "profile name with an escape sequence": (  # (attack review: it rewrote the terminal)
        '[profiles."x\\u001b]0;owned\\u0007"]\ncores = 2\n',
        1, 'profiles."x\\u001b]0;owned\\u0007"', "'x\\x1b]0;owned\\x07': a profile's name is "
                                                 "shown and typed: give it no control character"),
    "profile name with an invisible word joiner": (  # (re-attack review: passed as written)
        '[profiles."gpu\\u2060"]\ncores = 2\n',
        1, 'profiles."gpu\\u2060"', "'gpu\\u2060': a profile's name is shown and typed: give it "
                                    "no control character"),
    "a number of 5,000 digits": (  # (attack review: Python's own message, no file or line)
        "[daemon]\n\ncores = " + "9" * 5000 + "\n",
        3, None, "invalid TOML: a number of more than 4,300 digits, more than Python reads"),
    "daemon memory": (
        '[daemon]\nmemory = "plenty"\n',
        2, "daemon.memory", "memory='plenty' is not a memory size"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_errors_name_file_line_and_key(case: str, project: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_TEST_NO_SUCH_VARIABLE", raising=False)
    text, line, key, problem = BAD_FILES[case]
    path = write(project / "corral.toml", text)

    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)

    error = caught.value
    assert (error.path, error.line, error.key) == (path, line, key)
    prefix = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
    assert str(error).startswith(prefix + problem)
    assert "\n" not in str(error)


def test_an_unset_password_variable_is_said_by_a_job_that_asks_for_mail_only(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cold review: the README's [smtp] example, its password variable not
    exported, made corral profiles, options and backends fail over it."""
    monkeypatch.delenv("CORRAL_TEST_NO_SUCH_VARIABLE", raising=False)
    path = write(project / "corral.toml", '[profiles.short]\nwalltime = "30m"\n\n[smtp]\n'
                 'username = "me"\npassword_env = "CORRAL_TEST_NO_SUCH_VARIABLE"\n')
    monkeypatch.chdir(project)
    config = load_config(cwd=project)
    assert config.profile("short") == {"walltime": "30m"}
    said = (f"{path}:6: smtp.password_env: the environment variable "
            "'CORRAL_TEST_NO_SUCH_VARIABLE' is not set; export it with the SMTP password")
    assert config.smtp is not None and config.smtp.unset_password == said
    with corral.Scheduler(cores=1, config=config) as scheduler:
        assert scheduler.submit(abs, -2).result(timeout=60) == 2
        with pytest.raises(ValueError) as refused:
            scheduler.shell("true", notify="me@example.org")
    assert str(refused.value) == f"job 'true': notify= cannot send mail: {said}"


def test_an_error_in_the_user_file_names_the_user_file(user_file: Path, project: Path) -> None:
    write(user_file, '[profiles.short]\ncores = "two"\n')
    write(project / "corral.toml", '[profiles.short]\ncores = 2\n')

    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    assert str(caught.value).startswith(f"{user_file}:2: profiles.short.cores: cores='two' ")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, CorralError)


def test_an_unreadable_file_is_an_error(project: Path) -> None:
    (project / "corral.toml").mkdir()  # a directory cannot be read as a file

    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    assert str(caught.value) == (f"{project / 'corral.toml'}: a directory, not a regular file; "
                                 "a config file is a TOML text file, and nothing else is read")


def test_unknown_profile_suggests_the_closest_name(user_file: Path, project: Path) -> None:
    write(user_file, '[profiles.short]\nwalltime = "30m"\n')
    local = write(project / "corral.toml", '[profiles.long]\nwalltime = "2d"\n')
    config = load_config(cwd=project)

    with pytest.raises(ValueError) as caught:
        config.profile("shrot")
    assert str(caught.value) == (f"unknown profile 'shrot'; did you mean 'short'? "
                                 f"(profiles come from {user_file}, {local})")


def test_unknown_profile_without_profiles_says_where_to_define_them(
        user_file: Path, project: Path) -> None:
    config = load_config(cwd=project)

    with pytest.raises(ValueError) as caught:
        config.profile("short")
    assert str(caught.value) == (f"unknown profile 'short': no profiles are defined; add a "
                                 f"[profiles.short] table to {user_file} or "
                                 f"{project / 'corral.toml'}")


def test_a_user_file_that_is_the_local_file_is_read_once(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = write(project / "corral.toml", '[profiles.quick]\nwalltime = "5m"\n')
    monkeypatch.setenv("CORRAL_CONFIG", str(local))

    assert load_config(cwd=project).sources == (local,)


def test_the_api_applies_a_profile_beneath_the_options_given(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import corral

    write(project / "corral.toml", """
        [profiles.short]
        timeout = "1s"
        name = "quick"
    """)
    monkeypatch.chdir(project)
    with corral.Scheduler(cores=1) as scheduler:
        hung = scheduler.options(profile="short").shell("sleep 30")
        named = scheduler.shell("true", profile="short", name="mine")
        with pytest.raises(corral.JobTimedOut, match=r"timed out after 1\.0s"):
            hung.result(timeout=30)
        named.result(timeout=30)
        assert (hung.name, named.name) == ("quick", "mine")
        with pytest.raises(ValueError, match="unknown profile 'shrot'; did you mean 'short'"):
            scheduler.options(profile="shrot")


def test_options_given_by_name_win_over_a_profile_named_later_in_the_chain(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Options review: ``options(memory="8G").shell(cmd, profile="short")``
    ran with the profile's 2G, where the README says the options given win."""
    write(project / "corral.toml", """
        [profiles.short]
        memory = "2G"
        walltime = "30m"
    """)
    monkeypatch.chdir(project)
    with corral.Scheduler(cores=1) as scheduler:
        big = scheduler.options(memory="8G")
        for job in (big.shell("true", profile="short"),
                    big.options(profile="short").shell("true"),
                    scheduler.options(profile="short").options(memory="8G").shell("true")):
            assert (job.spec.resources.memory_mb, job.spec.resources.walltime_s) == (8192, 1800)


def test_a_profiles_environment_is_laid_over_variable_by_variable(
        user_file: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Options review: the local file's env replaced the user file's, and a
    job's own env= replaced the profile's, where each adds its variables."""
    write(user_file, '[profiles.omp]\nenv = { OMP_NUM_THREADS = "4", DROP = "x" }\n')
    write(project / "corral.toml", '[profiles.omp]\nenv = { FOO = "1" }\n')
    monkeypatch.chdir(project)
    with corral.Scheduler(cores=1) as scheduler:
        job = scheduler.options(env={"BAR": "2"}).shell(
            'echo "$OMP_NUM_THREADS $FOO $BAR ${DROP-unset}"', profile="omp",
            env={"DROP": None})
        job.result(timeout=30)
    assert job.stdout == "4 1 2 unset\n"


def test_the_daemon_table_sets_how_the_daemon_packs_jobs(user_file: Path, project: Path) -> None:
    write(user_file, """
        [daemon]
        cores = 4
        memory = "8G"
        queues = { gpu = 1, io = 3 }
        idle = "10m"
    """)
    write(project / "corral.toml", """
        [daemon]
        cores = 2
    """)
    settings = load_config(cwd=project).daemon
    assert (settings.cores, settings.memory_mb, dict(settings.queues), settings.idle) == (
        2, 8192, {"gpu": 1, "io": 3}, 600.0)
    assert settings.gpus is None and settings.tokens == 0


def test_the_daemon_backend_is_any_registered_backend(user_file: Path, project: Path) -> None:
    """The names come from the backend registry, so a site's own backend is accepted."""
    from corral.backends import BackendInfo, Capabilities, register_backend, unregister_backend

    register_backend(BackendInfo(
        name="sitequeue", title="SiteQueue", description="a site's scheduler",
        capabilities=Capabilities(outlives_driver=False, chains_dependencies=False, holds=False,
                                  enforces_walltime=False, packs_locally=True),
        factory="corral.backends.local.backend:LocalBackend"))
    try:
        write(project / "corral.toml", '[daemon]\nbackend = "sitequeue"\n')
        assert load_config(cwd=project).daemon.backend == "sitequeue"
    finally:
        unregister_backend("sitequeue")


def test_an_unknown_daemon_backend_lists_the_registered_ones_and_the_closest(user_file: Path,
                                                            project: Path) -> None:
    write(project / "corral.toml", '[daemon]\nbackend = "slrum"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    assert str(caught.value) == (f"{project / 'corral.toml'}:2: daemon.backend: "
                                 "backend='slrum' must be one of 'local', 'slurm', 'sge', "
                                 "'pbs', 'lsf', 'dask', 'auto'; did you mean 'slurm'?")


def test_a_profiles_cwd_is_its_files_and_an_empty_one_is_refused(project: Path,
                                                                  monkeypatch) -> None:
    """Attack review: a relative cwd was the reading process's (the daemon, in
    the run directory, died at start on one); "" was the current directory."""
    (project / "data").mkdir()
    write(project / "corral.toml", '[profiles.here]\ncwd = "data"\n')
    monkeypatch.chdir(project.parent)  # (not the file's directory)
    assert load_config(run_dir=project).profile("here")["cwd"] == str(project / "data")
    write(project / "corral.toml", '[profiles.none]\ncwd = ""\n')
    with pytest.raises(ConfigError, match=re.escape(
            f"{project / 'corral.toml'}:2: profiles.none.cwd: cwd = '' names no directory; "
            "leave it out for the directory a job is made in")):
        load_config(run_dir=project)


def test_a_file_of_many_bad_profiles_names_the_first_eleven_and_counts_the_rest(
        project: Path) -> None:
    """One line, not a megabyte of them (attack review: 20,000 bad profiles)."""
    write(project / "corral.toml", "".join(f"[profiles.p{number}]\ncores = 0\n\n"
                                           for number in range(15)))
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    said = str(caught.value)
    assert said.startswith(f"{project / 'corral.toml'}:2: profiles.p0.cores: cores=0 must be")
    assert "; and 14 more: line 5: profiles.p1.cores: " in said
    assert "line 32: profiles.p10.cores" in said and "profiles.p11" not in said
    assert said.endswith("; and 4 after those") and "\n" not in said


@pytest.mark.parametrize(("idle", "seconds"), [("0.01s", "0.01"), (0.5, "0.5"),
                                               ("366d", "31,622,400"), ("0s", "0"), (0, "0")])
def test_a_daemon_idle_time_out_of_the_variables_range_is_refused(
        idle: object, seconds: str, project: Path) -> None:
    """Attack review: idle = "0.01s" was taken, though $CORRAL_DAEMON_IDLE
    refuses it, and every submit then failed on a daemon that had exited."""
    path = write(project / "corral.toml", f"[daemon]\nidle = {idle!r}\n".replace("'", '"'))
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    assert str(caught.value) == (f"{path}:2: daemon.idle: idle={idle!r} is {seconds} s; the "
                                 "seconds a daemon waits idle must be from 1 to 31,536,000 "
                                 "(a year)")
    write(path, '[daemon]\nidle = "1s"\n')
    assert load_config(cwd=project).daemon.idle == 1.0


def test_the_daemon_idle_variable_has_the_same_bounds_as_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.cli.daemon import idle_seconds

    monkeypatch.setenv("CORRAL_DAEMON_IDLE", "0.01")
    with pytest.raises(CorralError, match=r"^CORRAL_DAEMON_IDLE='0.01' must be a number of "
                                          r"seconds from 1 to 31,536,000 \(a year\)$"):
        idle_seconds()
    monkeypatch.setenv("CORRAL_DAEMON_IDLE", "1")
    assert idle_seconds() == 1.0


def test_corral_config_set_to_dev_null_reads_no_user_file(tmp_path: Path, project: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The conventional "no file" (a test's, a CI's): not refused as no regular file."""
    monkeypatch.setenv("XDG_CONFIG_HOME", os.fspath(tmp_path / "xdg"))
    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    write(tmp_path / "xdg" / "corral" / "corral.toml", "[profiles.mine]\ncores = 1\n")
    assert "mine" in load_config(cwd=project).profiles
    monkeypatch.setenv("CORRAL_CONFIG", os.devnull)
    assert "mine" not in load_config(cwd=project).profiles
    # A link to it too: the usual way to switch a file off (re-attack review)
    (tmp_path / "xdg" / "corral" / "corral.toml").unlink()
    (tmp_path / "xdg" / "corral" / "corral.toml").symlink_to(os.devnull)
    monkeypatch.delenv("CORRAL_CONFIG")
    assert "mine" not in load_config(cwd=project).profiles


@pytest.mark.parametrize(("variable", "instead"), [
    ("CORRAL_CONFIG", "unset it to read {platform}, or set it to /dev/null to read none"),
    ("CORRAL_SITE_CONFIG", "set it empty to read no site file"),
])
def test_a_file_a_variable_names_must_exist(variable: str, instead: str, tmp_path: Path,
                                            project: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack review: a misspelt $CORRAL_CONFIG was read as an empty file, and
    the job its [daemon] table would have refused ran here. (A missing file in
    a default place is still no config: the user_file fixture's.)"""
    from corral.config_files import platform_config_path

    missing = tmp_path / "site-setings.toml"
    monkeypatch.setenv(variable, str(missing))
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    instead = instead.format(platform=platform_config_path())
    assert str(caught.value) == (f"{missing}: no such file, yet ${variable} names it; create "
                                 f"it, correct ${variable}, or {instead}")
    write(missing, "[profiles.short]\ncores = 1\n")
    assert load_config(cwd=project).profile("short") == {"cores": 1}


_LOAD_CONFIG = "from corral.config import load_config\nload_config()\n"


@pytest.mark.parametrize(("make", "kind"), [
    (lambda path: os.mkfifo(path) or path, "a FIFO"),
    (lambda path: Path("/dev/zero"), "a character device"),
])
def test_a_config_file_that_is_no_regular_file_is_refused_unread(
        make, kind: str, tmp_path: Path) -> None:
    """Attack review: a FIFO named as the config hung every command, and
    /dev/zero was read until memory ran out. (A process of its own, with a
    memory limit and a timeout, so that a regression fails and does not hang.)"""
    import resource
    import subprocess
    import sys

    path = make(tmp_path / "fifo.toml")

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    done = subprocess.run([sys.executable, "-c", _LOAD_CONFIG], capture_output=True, text=True,
                          timeout=30, cwd=tmp_path, preexec_fn=limited,
                          env={**os.environ, "CORRAL_CONFIG": str(path)})
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"corral.config.ConfigError: {path}: {kind}, not a regular file; a config file is a "
        "TOML text file, and nothing else is read")


def test_a_config_file_is_read_up_to_a_megabyte(project: Path) -> None:
    """A larger file is no settings (a log named by mistake), and is not read whole."""
    from corral.config import MAX_CONFIG_BYTES

    path = project / "corral.toml"
    path.write_text("#" * (MAX_CONFIG_BYTES - 1) + "\n")
    assert load_config(cwd=project).sources == (path,)
    path.write_text("#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    assert str(caught.value) == (f"{path}: larger than 1 MB, the most corral reads of a config "
                                 "file; is it the right file?")


def test_the_queues_example_of_the_daemon_table_is_toml(project: Path) -> None:
    """Attack review: it read "queues = {{ gpu = 1, io = 4 }}"."""
    import tomllib

    path = write(project / "corral.toml", '[daemon]\nqueues = ["gpu"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    assert str(caught.value) == (f"{path}:2: daemon.queues: queues must be a table of queue "
                                 "names and how many of their jobs may run at once, e.g. "
                                 "queues = { gpu = 1, io = 4 }")
    example = str(caught.value).split("e.g. ")[1]
    assert tomllib.loads(example) == {"queues": {"gpu": 1, "io": 4}}


_NFC, _NFD = "caf\u00e9", "cafe\u0301"


@pytest.mark.parametrize(("written", "asked"), [(_NFC, _NFD), (_NFD, _NFC), (_NFC, _NFC)])
def test_a_profile_name_is_found_whatever_its_unicode_form(
        written: str, asked: str, user_file: Path, project: Path) -> None:
    """Attack review: "unknown profile 'café'; did you mean 'café'?" for a name
    typed with a combining accent (NFD) where the file has the precomposed é."""
    write(user_file, f'[profiles."{written}"]\ncores = 2\n')
    write(project / "corral.toml", f'[profiles."{asked}"]\nmemory = "2G"\n')
    config = load_config(cwd=project)
    assert config.profile(asked) == config.profile(written) == {"cores": 2, "memory": "2G"}
    assert list(config.profiles) == [_NFC]


def test_one_profile_name_in_two_unicode_forms_in_one_file_is_refused(project: Path) -> None:
    path = write(project / "corral.toml",
                 f'[profiles."{_NFC}"]\ncores = 2\n\n[profiles."{_NFD}"]\ncores = 3\n')
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=project)
    assert str(caught.value) == (f'{path}:4: profiles."{_NFD}": the same name as profile '
                                 f"'{_NFC}' before it, in another Unicode form (NFC and NFD); "
                                 "give one of them another name")


def test_corral_profiles_with_the_config_variable_on_dev_null_names_no_file_to_add_to(tmp_path):
    """Cold review: it said "add a [profiles.NAME] table to /dev/null"."""
    from support.cli import Corral

    cli = Corral(tmp_path / "home", tmp_path / "run")
    listed = cli("profiles", env={"CORRAL_CONFIG": os.devnull})
    assert listed.status == 0 and listed.out.startswith(
        "no profiles defined; add a [profiles.NAME] table to ")
    assert "/dev/null" not in listed.out and "corral.toml" in listed.out


def test_messages_that_say_where_to_set_something_name_no_device(tmp_path, monkeypatch):
    """Cold and attack reviews: with CORRAL_CONFIG=/dev/null, the errors of a
    missing profile, a notify= without a mail server and a daemon's unknown
    queue said to add a table to /dev/null."""
    from support.cli import Corral

    monkeypatch.setenv("CORRAL_CONFIG", os.devnull)
    monkeypatch.setenv("CORRAL_SITE_CONFIG", "")
    monkeypatch.chdir(tmp_path)
    with corral.Scheduler(cores=1) as scheduler:
        with pytest.raises(ValueError) as no_profile:
            scheduler.options(profile="fast").submit(abs, -1)
        with pytest.raises(ValueError) as no_server:
            scheduler.options(notify="me@example.org").submit(abs, -1)
    assert str(no_profile.value) == ("unknown profile 'fast': no profiles are defined; add a "
                                     f"[profiles.fast] table to {tmp_path / 'corral.toml'}")
    assert str(no_server.value).endswith(f"set [smtp] host in {tmp_path / 'corral.toml'} (e.g. "
                                         'host = "smtp.example.org", port = 587)')
    cli = Corral(tmp_path / "home", tmp_path / "run")
    refused = cli("submit", "--queue", "io", "true",
                  env={"CORRAL_CONFIG": os.devnull, "CORRAL_SITE_CONFIG": ""})
    assert refused.status != 0 and refused.err.endswith(
        f"in the [daemon] table of {tmp_path / 'run' / 'corral.toml'})\n"), refused.err
