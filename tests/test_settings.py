"""The server's settings, declared once (settlement/config.py): a bad value from the environment or
a flag is one line naming it and exit status 2, the defaults are the ones they were, a flag wins
over the environment and the environment over the default, `condpay config show` masks the
database password, README.md's table is the generated one, and every --help names the command a
user types."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from pydantic import ValidationError

import launcher
from settlement import config
from settlement.api.workers import worker_environment
from settlement.config import SettingError, Settings

ROOT = Path(__file__).resolve().parents[1]


def condpay(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """`condpay ARGS` in a fresh interpreter, with no CONDPAY_* but ``env``'s. A value that is
    wrongly accepted starts a server on a free port (127.0.0.1:0) and an embedded database in
    ``cwd``; the timeout ends it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONDPAY_")}
    clean["CONDPAY_ADDR"] = "127.0.0.1:0"
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- bad values ------------------------------------------------------------------------------------
# (how it is given, what is given, the line expected after "condpay serve: ")
BAD = [
    # a whole number (no minimum; the cross-check is below)
    ({"CONDPAY_PVP_HOLD_MS": "30s"}, "CONDPAY_PVP_HOLD_MS='30s': must be a whole number"),
    # a whole number ≥ 1
    ({"CONDPAY_WRITERS": "x"}, "CONDPAY_WRITERS='x': must be a whole number ≥ 1"),
    (["--writers", "0"], "--writers='0': must be a whole number ≥ 1"),
    ({"CONDPAY_STREAMS_MAX": "-3"}, "CONDPAY_STREAMS_MAX='-3': must be a whole number ≥ 1"),
    (
        {"CONDPAY_INSTRUCTION_TTL_MAX_SECONDS": "0"},
        "CONDPAY_INSTRUCTION_TTL_MAX_SECONDS='0': must be a whole number ≥ 1",
    ),
    # on or off
    (
        {"CONDPAY_INSECURE": "maybe"},
        "CONDPAY_INSECURE='maybe': must be 1, true, yes or on, or 0, false, no, off or empty",
    ),
    (
        ["--insecure=sure"],
        "--insecure='sure': must be 1, true, yes or on, or 0, false, no, off or empty",
    ),
    (
        {"CONDPAY_QUIET_CALLS": "2"},
        "CONDPAY_QUIET_CALLS='2': must be 1, true, yes or on, or 0, false, no, off or empty",
    ),
    (
        ["--quiet-calls=loud"],
        "--quiet-calls='loud': must be 1, true, yes or on, or 0, false, no, off or empty",
    ),
    # on, off or unset
    (
        {"CONDPAY_REFLECTION": "auto"},
        "CONDPAY_REFLECTION='auto': must be 1, true, yes or on, or 0, false, no or off, or empty"
        " (unset)",
    ),
    # one of
    (
        {"CONDPAY_LOG_LEVEL": "verbose"},
        "CONDPAY_LOG_LEVEL='verbose': must be one of debug, info, warning, error",
    ),
    (["--log-level", "trace"], "--log-level='trace': must be one of debug, info, warning, error"),
    (
        ["--pg-isolation", "repeatable_read"],
        "--pg-isolation='repeatable_read': must be one of read_committed, serializable",
    ),
    (
        {"CONDPAY_EVENT_LOOP": "trio"},
        "CONDPAY_EVENT_LOOP='trio': must be one of uvloop, asyncio",
    ),
    # N|auto
    (["--workers", "abc"], "--workers='abc': must be a whole number ≥ 1, or auto"),
    ({"CONDPAY_WORKERS": "0"}, "CONDPAY_WORKERS='0': must be a whole number ≥ 1, or auto"),
    (
        {"CONDPAY_VERIFY_THREADS": "-1"},
        "CONDPAY_VERIFY_THREADS='-1': must be a whole number ≥ 0, or auto",
    ),
    # HOST:PORT or empty
    (
        ["--metrics-addr", "localhost"],
        "--metrics-addr='localhost': must be HOST:PORT (a port 0 to 65535), or empty (off)",
    ),
    (
        {"CONDPAY_METRICS_ADDR": "127.0.0.1:99999"},
        "CONDPAY_METRICS_ADDR='127.0.0.1:99999': must be HOST:PORT (a port 0 to 65535), or empty"
        " (off)",
    ),
    # the PvP timing cross-check, with the other value the default
    (
        {"CONDPAY_PVP_HOLD_MS": "10000"},
        "CONDPAY_PVP_HOLD_MS='10000' with CONDPAY_PVP_MARGIN_MS=5000 (the default): the hold must"
        " be more than twice the margin (here more than 10000), else every PvP settlement aborts"
        " (DECISION_DEADLINE)",
    ),
    (
        {"CONDPAY_PVP_MARGIN_MS": "20000"},
        "CONDPAY_PVP_HOLD_MS=30000 (the default) with CONDPAY_PVP_MARGIN_MS='20000': the hold"
        " must be more than twice the margin (here more than 40000), else every PvP settlement"
        " aborts (DECISION_DEADLINE)",
    ),
]


@pytest.mark.parametrize(("given", "line"), BAD, ids=[line.split(":")[0] for _, line in BAD])
def test_a_bad_value_is_one_line_naming_it_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    given: dict[str, str] | list[str],
    line: str,
) -> None:
    """In this process (one fresh interpreter per value would cost a second each): the command
    line's own entry point; the test below runs one in a real process."""
    flags = given if isinstance(given, list) else []
    for name in os.environ:
        if name.startswith("CONDPAY_"):
            monkeypatch.delenv(name)
    for name, value in {
        "CONDPAY_ADDR": "127.0.0.1:0",
        **(given if isinstance(given, dict) else {}),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    # Without --insecure: a value wrongly accepted ends in the refusal to start without TLS.
    try:
        status = launcher.main(["serve", *flags])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    assert (status, err) == (2, f"condpay serve: {line}\n")
    assert out == ""
    assert not (tmp_path / "var").exists(), "it went on to open the database"


def test_a_bad_value_in_a_real_process_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = condpay("serve", "--workers", "abc", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "condpay serve: --workers='abc': must be a whole number ≥ 1, or auto\n",
    )
    assert done.stdout == ""
    done = condpay("serve", env={"CONDPAY_WRITERS": "x"}, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "condpay serve: CONDPAY_WRITERS='x': must be a whole number ≥ 1\n",
    )


def test_a_flag_names_itself_even_when_the_environment_is_bad_too() -> None:
    """A bad flag over a good variable names the flag; a good flag over a bad variable is what
    counts (the variable is not read)."""
    done = condpay("config", "show", "--writers", "x", env={"CONDPAY_WRITERS": "2"})
    assert (done.returncode, done.stderr) == (
        2,
        "condpay config show: --writers='x': must be a whole number ≥ 1\n",
    )
    done = condpay("config", "show", "--writers", "2", env={"CONDPAY_WRITERS": "x"})
    assert done.returncode == 0, done.stderr
    assert "CONDPAY_WRITERS=2  (source: flag)" in done.stdout.splitlines()


def test_db_upgrade_reads_the_settings_the_same_way(tmp_path: Path) -> None:
    done = condpay("db", "upgrade", env={"CONDPAY_WORKERS": "many"}, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "condpay db upgrade: CONDPAY_WORKERS='many': must be a whole number ≥ 1, or auto\n",
    )
    database = tmp_path / "x.db"
    done = condpay("db", "upgrade", "--database-url", f"sqlite:///{database}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert database.exists()


@pytest.mark.parametrize("text", ["1", "true", "YES", " on ", "True"])
def test_a_switch_is_on_with_1_true_yes_on(text: str) -> None:
    loaded = Settings.from_env({"CONDPAY_INSECURE": text, "CONDPAY_QUIET_CALLS": text})
    assert (loaded.insecure, loaded.log_calls) == (True, False)
    assert Settings.from_env({"CONDPAY_REFLECTION": text}).reflection is True


@pytest.mark.parametrize("text", ["0", "false", "No", "OFF", ""])
def test_a_switch_is_off_with_0_false_no_off_or_empty(text: str) -> None:
    loaded = Settings.from_env({"CONDPAY_INSECURE": text, "CONDPAY_QUIET_CALLS": text})
    assert (loaded.insecure, loaded.log_calls) == (False, True)
    assert Settings.from_env({"CONDPAY_REFLECTION": text}).reflection is (
        None if text == "" else False
    )


def test_a_bad_value_in_code_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="must be a whole number ≥ 1"):
        Settings(writers=0)
    with pytest.raises(ValidationError, match="must be one of debug"):
        Settings().replace(log_level="loud")
    with pytest.raises(SettingError, match=r"^CONDPAY_WRITERS='x': must be a whole number ≥ 1$"):
        Settings.from_env({"CONDPAY_WRITERS": "x"})


# -- defaults, precedence, immutability ------------------------------------------------------------
def test_the_defaults_are_unchanged() -> None:
    expected = {
        "addr": "127.0.0.1:50051",
        "database_url": "",
        "insecure": False,
        "certs_dir": "var/certs",
        "log_level": "info",
        "log_calls": True,
        "writers": 1,
        "pg_isolation": "read_committed",
        "workers": 0,
        "verify_threads": None,
        "reuse_port": False,
        "event_loop": "uvloop",
        "bridge": "auto",
        "bridge_gateway": "CONDPAY",
        "pvp_hold_ms": 30_000,
        "pvp_margin_ms": 5_000,
        "instruction_ttl_max_seconds": 86_400,
        "calls_in_flight_max": 512,
        "streams_max": 64,
        "contracts_per_day_max": 1000,
        "heavy_calls_max": 2,
        "checkpoint_key": "",
        "checkpoint_every_entries": 1000,
        "checkpoint_every_seconds": 10,
        "failed_outcome_retention_seconds": 86_400,
        "bridge_certs_dir": "",
        "bridge_insecure": False,
        "bridge_validators": "",
        "reflection": None,
        "metrics_addr": "",
        "otel": False,
    }
    assert dict(Settings()) == expected
    assert Settings.from_env({}) == Settings()
    # An empty variable is unset, but for text, where it is the value.
    empty = {config.env_name(name): "" for name in config.names()}
    assert dict(Settings.from_env(empty)) == {
        **expected,
        "addr": "",
        "certs_dir": "",
        "bridge": "",
        "bridge_gateway": "",
    }


def test_a_flag_wins_over_the_environment_and_the_environment_over_the_default() -> None:
    parser = argparse.ArgumentParser()
    config.add_flags(parser)
    env = {"CONDPAY_WRITERS": "3", "CONDPAY_LOG_LEVEL": "warning", "CONDPAY_QUIET_CALLS": "1"}
    flags = config.flag_values(parser.parse_args(["--writers", "4", "--quiet-calls=no"]))
    loaded = config.load(env, flags)
    assert (loaded.settings.writers, loaded.settings.log_level) == (4, "warning")
    assert loaded.settings.log_calls is True
    assert loaded.settings.pg_isolation == "read_committed"
    assert (loaded.sources["writers"], loaded.sources["log_level"]) == ("flag", "env")
    assert (loaded.sources["log_calls"], loaded.sources["pg_isolation"]) == ("flag", "default")


def test_every_existing_flag_still_works() -> None:
    parser = argparse.ArgumentParser()
    config.add_flags(parser)
    args = parser.parse_args(
        [
            "--addr=0.0.0.0:6000",
            "--database-url=sqlite:///x.db",
            "--insecure",
            "--certs-dir=c",
            "--log-level=debug",
            "--quiet-calls",
            "--writers=2",
            "--pg-isolation=serializable",
            "--workers=auto",
        ]
    )
    settings = config.load({"CONDPAY_WORKERS": "3"}, config.flag_values(args)).settings
    assert settings == Settings(
        addr="0.0.0.0:6000",
        database_url="sqlite:///x.db",
        insecure=True,
        certs_dir="c",
        log_level="debug",
        log_calls=False,
        writers=2,
        pg_isolation="serializable",
        workers=0,
    )
    assert config.flag_values(parser.parse_args([])) == {}


def test_config_show_says_where_each_value_came_from_and_masks_the_password() -> None:
    done = condpay(
        "config",
        "show",
        "--writers",
        "4",
        env={
            "CONDPAY_DATABASE_URL": "postgresql://condpay:s3cret-pw@db.example:5432/condpay",
            "CONDPAY_WRITERS": "3",
            "CONDPAY_STREAMS_MAX": "9",
        },
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "s3cret-pw" not in done.stdout
    assert (
        "CONDPAY_DATABASE_URL=postgresql://condpay:***@db.example:5432/condpay  (source: env)"
        in lines
    )
    assert "CONDPAY_WRITERS=4  (source: flag)" in lines
    assert "CONDPAY_STREAMS_MAX=9  (source: env)" in lines
    assert "CONDPAY_ADDR=127.0.0.1:0  (source: env)" in lines
    assert "CONDPAY_WORKERS=auto  (source: default)" in lines
    assert len(lines) == len(config.names())
    assert all(re.fullmatch(r"CONDPAY_\w+=.*  \(source: (default|env|flag)\)", x) for x in lines)


def test_settings_are_immutable_and_replace_validates() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.writers = 2  # type: ignore[misc]
    changed = settings.replace(writers=2, workers=3)
    assert (changed.writers, changed.workers, settings.writers) == (2, 3, 1)
    with pytest.raises(ValidationError):
        settings.replace(no_such_setting=1)


# -- the environment each worker gets --------------------------------------------------------------
def test_the_environment_gives_back_the_settings_and_workers_get_the_flags() -> None:
    settings = Settings(
        addr="127.0.0.1:6001",
        database_url="postgresql://u:p@h/d",
        insecure=True,
        log_level="debug",
        log_calls=False,
        writers=3,
        pg_isolation="serializable",
        workers=2,
        verify_threads=0,
        bridge="grpc://bridge:1",
        reflection=False,
        streams_max=7,
        pvp_hold_ms=40_000,
    )
    assert Settings.from_env(settings.to_environment()) == settings
    assert set(settings.to_environment()) == {config.env_name(n) for n in config.names()}
    child = Settings.from_env(worker_environment(settings, base={"CONDPAY_WRITERS": "9"}))
    assert child == settings.replace(workers=1, reuse_port=True)


# -- the docs are the declaration ------------------------------------------------------------------
def test_the_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    start = "`condpay config table`; tests/test_settings.py keeps them equal -->\n"
    assert start in readme
    table = readme.split(start, 1)[1].split("<!-- end of settings -->", 1)[0]
    assert table == config.markdown_table(), "run `condpay config table` into README.md"
    done = condpay("config", "table")
    assert (done.returncode, done.stdout) == (0, config.markdown_table())


def test_serve_help_lists_every_setting() -> None:
    done = condpay("serve", "--help")
    assert done.returncode == 0
    for name in config.names():
        assert f"  {config.env_name(name)}=" in done.stdout
        flag = config.setting(name).flag
        if flag is not None:
            assert flag in done.stdout


def test_version_is_the_package_version() -> None:
    done = condpay("--version")
    assert (done.returncode, done.stdout) == (0, f"condpay {metadata.version('condpay')}\n")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", metadata.version("condpay"))


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["db"],
        ["db", "upgrade"],
        ["config"],
        ["config", "show"],
        ["config", "table"],
        ["dsl"],
        ["dsl", "check"],
        ["bridge"],
        ["bridge", "serve"],
        ["certs"],
        ["certs", "init"],
        ["sim"],
        ["sim", "run"],
        ["demo"],
        ["console"],
    ],
    ids=lambda command: " ".join(["condpay", *command]),
)
def test_every_help_names_the_command_a_user_types(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = launcher.main([*command, "--help"])
    except SystemExit as exit_:  # argparse's own --help; some commands return the status
        status = exit_.code
    out, err = capsys.readouterr()
    assert status in (0, None), err
    usage = " ".join(["usage: condpay", *command])
    assert out.startswith(usage + " ") or out.startswith(usage + "\n"), out[:200]
