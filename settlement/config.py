"""Server settings, declared once: flags over environment over defaults.

Every setting is one field of :class:`Settings` (a pydantic-settings ``BaseSettings``): its type,
its default and, in its :class:`Setting` annotation, how its text is read (:class:`Text`,
:class:`Whole`, :class:`Switch`, :class:`Choice`, :class:`CountOrAuto`, :class:`Address`), its
environment variable (``CONDPAY_`` + the name, unless it says otherwise), its ``condpay serve``
flag if it has one and its help. Everything else is derived from that declaration:

- :func:`load` / :meth:`Settings.from_env`: the environment, then the flags, validated; a bad value
  is a :class:`SettingError` naming the variable or flag as the user wrote it, the value and what
  is allowed (``CONDPAY_WRITERS='x': must be a whole number ≥ 1``);
- :func:`add_flags`: the flags of ``condpay serve`` (and ``condpay config show``);
- :func:`environment_help`: the environment list of ``condpay serve --help``;
- :meth:`Settings.to_environment`: the environment that reproduces a ``Settings`` (each worker of
  ``condpay serve --workers N`` gets it, settlement/api/workers.py);
- :func:`markdown_table`: README.md's table (``condpay config table``; a test keeps them equal);
- :func:`show`: ``condpay config show``, the effective settings and where each came from.

``Settings(...)`` itself reads nothing from the environment: it is the given values over the
defaults, each validated, and immutable; :meth:`Settings.replace` makes a validated copy. The
PvP timing cross-check (:func:`check_pvp_timing`) is made where settings are loaded, not there, so
that a test can build a timing that could never commit and watch the coordinator abort.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from settlement.metrics import parse_addr

DEFAULT_ADDR = "127.0.0.1:50051"
ENV_PREFIX = "CONDPAY_"


# -- how a setting's text is read ------------------------------------------------------------------
class _Refused(Exception):
    """A value outside a kind's domain; ``allowed`` says what is allowed."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


class Kind(Protocol):
    """How a setting is written as text (in its environment variable or flag) and read back.

    ``parse`` takes the text a user wrote, or a value of the field's own type given in code, and
    returns the field's value or raises :class:`_Refused`; ``render`` is its inverse, so that
    ``parse(render(v)) == v``."""

    metavar: str

    @property
    def allowed(self) -> str: ...

    def parse(self, value: object) -> object: ...

    def render(self, value: Any) -> str: ...


@dataclass(frozen=True)
class Text:
    """Any text, taken as written (an empty value included)."""

    metavar: str = "TEXT"
    allowed: str = "must be text"

    def parse(self, value: object) -> object:
        if not isinstance(value, str):
            raise _Refused(self.allowed)
        return value

    def render(self, value: Any) -> str:
        return str(value)


_WHOLE = re.compile(r"[+-]?[0-9]+")


def _whole(value: object, allowed: str) -> int:
    if isinstance(value, bool):
        raise _Refused(allowed)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value.strip())
    raise _Refused(allowed)


@dataclass(frozen=True)
class Whole:
    """A whole number, at least ``minimum`` when there is one."""

    minimum: int | None = None
    metavar: str = "N"

    @property
    def allowed(self) -> str:
        if self.minimum is None:
            return "must be a whole number"
        return f"must be a whole number ≥ {self.minimum}"

    def parse(self, value: object) -> object:
        number = _whole(value, self.allowed)
        if self.minimum is not None and number < self.minimum:
            raise _Refused(self.allowed)
        return number

    def render(self, value: Any) -> str:
        return str(value)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Switch:
    """On or off: 1, true, yes, on / 0, false, no, off or empty (any case). ``inverted``: the
    text says the opposite of the field (``CONDPAY_QUIET_CALLS=1`` is ``log_calls=False``)."""

    inverted: bool = False
    metavar: str = "1|0"
    allowed: str = "must be 1, true, yes or on, or 0, false, no, off or empty"

    def parse(self, value: object) -> object:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE:
                return not self.inverted
            if text in _FALSE:
                return self.inverted
        raise _Refused(self.allowed)

    def render(self, value: Any) -> str:
        return "1" if bool(value) != self.inverted else "0"


@dataclass(frozen=True)
class OptionalSwitch:
    """A :class:`Switch` that may be unset (``None``, an empty value): the server decides."""

    metavar: str = "1|0"
    allowed: str = "must be 1, true, yes or on, or 0, false, no or off, or empty (unset)"

    def parse(self, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return Switch().parse(value)
        except _Refused:
            raise _Refused(self.allowed) from None

    def render(self, value: Any) -> str:
        return "" if value is None else Switch().render(value)


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (any case)."""

    options: tuple[str, ...]

    @property
    def metavar(self) -> str:
        return "|".join(self.options)

    @property
    def allowed(self) -> str:
        return "must be one of " + ", ".join(self.options)

    def parse(self, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in self.options:
            return value.strip().lower()
        raise _Refused(self.allowed)

    def render(self, value: Any) -> str:
        return str(value)


@dataclass(frozen=True)
class CountOrAuto:
    """A whole number ≥ ``minimum``, or ``auto`` (or empty), which is the field's ``auto``."""

    minimum: int
    auto: int | None
    metavar: str = "N|auto"

    @property
    def allowed(self) -> str:
        return f"must be a whole number ≥ {self.minimum}, or auto"

    def parse(self, value: object) -> object:
        if value is None or (type(value) is int and value == self.auto):
            if value != self.auto:
                raise _Refused(self.allowed)
            return value  # given in code: the field's own "auto"
        if isinstance(value, str) and value.strip().lower() in {"", "auto"}:
            return self.auto
        number = _whole(value, self.allowed)
        if number < self.minimum:
            raise _Refused(self.allowed)
        return number

    def render(self, value: Any) -> str:
        return "auto" if value == self.auto else str(value)


@dataclass(frozen=True)
class Address:
    """HOST:PORT (a port 0 to 65535); empty is off."""

    metavar: str = "HOST:PORT"
    allowed: str = "must be HOST:PORT (a port 0 to 65535), or empty (off)"

    def parse(self, value: object) -> object:
        if not isinstance(value, str):
            raise _Refused(self.allowed)
        if value.strip():
            try:
                parse_addr(value.strip())
            except ValueError:
                raise _Refused(self.allowed) from None
        return value.strip()

    def render(self, value: Any) -> str:
        return str(value)


@dataclass(frozen=True)
class Setting:
    """The declaration of one setting, beside its field's type and default (see the module)."""

    kind: Kind
    help: str
    # ``--flag`` of `condpay serve`, if it has one.
    flag: str | None = None
    # The environment variable, if it is not CONDPAY_ + the field's name.
    env: str | None = None
    # How the default reads in the help and README when its text would say little ("auto").
    default_text: str | None = None
    # A password may be in the value: `config show` masks it.
    secret: bool = False


# -- the declaration -------------------------------------------------------------------------------
_LEVELS = ("debug", "info", "warning", "error")
_ISOLATIONS = ("read_committed", "serializable")


class Settings(BaseSettings):
    """The server's settings (immutable; see the module for what is derived from this)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True
    )

    addr: Annotated[
        str,
        Setting(Text("HOST:PORT"), "the address to listen on", flag="--addr"),
    ] = DEFAULT_ADDR
    database_url: Annotated[
        str,
        Setting(
            Text("URL"),
            "postgresql://user:pass@host:port/db, or sqlite:///PATH",
            flag="--database-url",
            default_text="embedded SQLite at ./var/condpay.db",
            secret=True,
        ),
    ] = ""
    insecure: Annotated[
        bool,
        Setting(
            Switch(),
            "plaintext development mode, the identity from condpay-caller metadata (else mutual"
            " TLS, or the server refuses to start)",
            flag="--insecure",
        ),
    ] = False
    certs_dir: Annotated[
        str,
        Setting(
            Text("DIR"),
            "mutual TLS files from `condpay certs init` (server.pem, server.key, ca.pem)",
            flag="--certs-dir",
        ),
    ] = "var/certs"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Setting(Choice(_LEVELS), "the least severe log events written", flag="--log-level"),
    ] = "info"
    # One JSON line per call (method, caller, request id, status, latency).
    log_calls: Annotated[
        bool,
        Setting(
            Switch(inverted=True),
            "no log line per call (by default one JSON line: method, caller, request id, status,"
            " latency)",
            flag="--quiet-calls",
            env="CONDPAY_QUIET_CALLS",
        ),
    ] = True
    # Writer connections on PostgreSQL: batches in flight at once (SQLite always has one). One
    # measured fastest on 2 cores: while a batch is in flight the next one fills up.
    writers: Annotated[
        int,
        Setting(
            Whole(1),
            "PostgreSQL writer connections, batches in flight at once (SQLite has one)",
            flag="--writers",
        ),
    ] = 1
    pg_isolation: Annotated[
        Literal["read_committed", "serializable"],
        Setting(
            Choice(_ISOLATIONS),
            "PostgreSQL isolation of write transactions: read_committed (row locks) or"
            " serializable (for distributed SQL)",
            flag="--pg-isolation",
        ),
    ] = "read_committed"
    # 0 is "auto": one per CPU on PostgreSQL, one on SQLite (one writer at a time there anyway).
    workers: Annotated[
        int,
        Setting(
            CountOrAuto(1, auto=0),
            "server processes sharing the address (SO_REUSEPORT), each a stateless replica",
            flag="--workers",
            default_text="auto: one per CPU on PostgreSQL, one on SQLite",
        ),
    ] = 0
    # Threads that verify BLS aggregates beside the event loop (blspy releases the GIL); None is
    # "auto": the CPUs the server processes leave spare (1 worker on 2 CPUs: 1), 0 verifies on
    # the loop (a thread only adds hand-offs when every CPU runs a worker already).
    metrics_addr: Annotated[
        str,
        Setting(
            Address(),
            "serve Prometheus /metrics on HOST:PORT; with --workers N the parent serves the"
            " workers' series summed (docs/operations.md)",
            flag="--metrics-addr",
            default_text="off",
        ),
    ] = ""
    otel: Annotated[
        bool,
        Setting(
            Switch(),
            "OpenTelemetry traces, exported as the standard OTEL_* variables say"
            " (docs/operations.md)",
        ),
    ] = False
    verify_threads: Annotated[
        int | None,
        Setting(
            CountOrAuto(0, auto=None),
            "threads verifying BLS aggregates beside the event loop (0: on the loop)",
            default_text="auto: the CPUs the workers leave spare",
        ),
    ] = None
    reuse_port: Annotated[
        bool,
        Setting(
            Switch(),
            "bind with SO_REUSEPORT (set by `condpay serve --workers` in each worker)",
        ),
    ] = False
    event_loop: Annotated[
        Literal["uvloop", "asyncio"],
        Setting(
            Choice(("uvloop", "asyncio")),
            "the event loop: uvloop when installed, or asyncio (the standard loop); read by"
            " condpay.event_loop, so `condpay bridge serve` too",
        ),
    ] = "uvloop"
    bridge: Annotated[
        str,
        Setting(
            Text("BRIDGE"),
            "the multi-CBDC bridge for PvP and cross-currency DvP: auto (in process, beside the"
            " database, with one worker; none with more), none, memory, sqlite:///PATH,"
            " grpc://HOST:PORT (a `condpay bridge serve`)",
        ),
    ] = "auto"
    # Its reserve wallet is the gateway through which cross-currency legs pass.
    bridge_gateway: Annotated[
        str,
        Setting(Text("ID"), "the core's participant on the bridge, an institution id"),
    ] = "CONDPAY"
    bridge_validators: Annotated[
        str,
        Setting(
            Text("PATH"),
            "a grpc:// bridge's validator set, pinned: the JSON file `condpay bridge serve"
            " --export-validators PATH` writes",
            default_text="none (required with a grpc:// bridge)",
        ),
    ] = ""
    bridge_certs_dir: Annotated[
        str,
        Setting(
            Text("DIR"),
            "the gateway's bridge identity for mutual TLS to a grpc:// bridge (ca.pem,"
            " participants/bank_GATEWAY.pem and .key)",
            default_text="bridge/ in the certs dir",
        ),
    ] = ""
    bridge_insecure: Annotated[
        bool,
        Setting(
            Switch(), "plaintext to a bridge in its --insecure development mode (development only)"
        ),
    ] = False
    reflection: Annotated[
        bool | None,
        Setting(
            OptionalSwitch(),
            "gRPC server reflection: 1 on, 0 off",
            default_text="unset: on in the insecure mode, off under TLS",
        ),
    ] = None
    # PvP timing (docs/settlement.md).
    pvp_hold_ms: Annotated[
        int,
        Setting(
            Whole(),
            "how long a settlement's legs are held before it must be decided; more than twice"
            " the margin",
        ),
    ] = 30_000
    pvp_margin_ms: Annotated[
        int,
        Setting(Whole(0), "the bridge's reservation ends this much before the hold does"),
    ] = 5_000
    instruction_ttl_max_seconds: Annotated[
        int,
        Setting(
            Whole(1),
            "how far ahead a signed document may expire (a later expires_at_us is"
            " INSTRUCTION_EXPIRY_TOO_FAR)",
        ),
    ] = 86_400
    # Quotas (docs/api.md "Quotas"), each refused with RESOURCE_EXHAUSTED naming the limit and
    # this setting.
    calls_in_flight_max: Annotated[
        int,
        Setting(
            Whole(1),
            "quota: calls one caller may have in flight per server process, streams included",
        ),
    ] = 512
    streams_max: Annotated[
        int,
        Setting(Whole(1), "quota: WatchPayment streams one caller may hold open per process"),
    ] = 64
    # Counted in the database, so across replicas.
    contracts_per_day_max: Annotated[
        int,
        Setting(
            Whole(1),
            "quota: contracts one caller may register per UTC day (RegisterContract, and"
            " LockPayment with a new source), across replicas",
        ),
    ] = 1000
    # They run in a process pool, off the event loop.
    heavy_calls_max: Annotated[
        int,
        Setting(
            Whole(1),
            "quota: ValidateContract, SimulateContract and contract compiles one caller may have"
            " in flight per process",
        ),
    ] = 2
    checkpoint_key: Annotated[
        str,
        Setting(
            Text("FILE"),
            "the Ed25519 key that signs journal checkpoints (PEM, from `condpay certs init`;"
            " made there when missing); in --insecure mode without it, a key kept in the"
            " database (docs/evidence.md)",
            default_text="CERTS_DIR/checkpoint.key",
        ),
    ] = ""
    checkpoint_every_entries: Annotated[
        int,
        Setting(Whole(1), "sign a journal checkpoint at least every this many entries"),
    ] = 1000
    checkpoint_every_seconds: Annotated[
        int,
        Setting(Whole(1), "... and at least this often while entries are added"),
    ] = 10
    failed_outcome_retention_seconds: Annotated[
        int,
        Setting(
            Whole(1),
            "how long a failed request's outcome is kept: until then its request id keeps"
            " failing the same way; afterwards it may be used again",
        ),
    ] = 86_400

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) is the given values over the defaults: the environment is read by
        # from_env()/load() alone (EnvironmentSource), so that they can say where a value came
        # from, and code and tests that build Settings never pick up a CONDPAY_* by accident.
        return (init_settings,)

    @field_validator("*", mode="before")
    @classmethod
    def _read(cls, value: object, info: ValidationInfo) -> object:
        assert info.field_name is not None
        try:
            return setting(info.field_name).kind.parse(value)
        except _Refused as refused:
            raise PydanticCustomError("setting", refused.allowed) from None

    def worker_count(self) -> int:
        if self.workers > 0:
            return self.workers
        is_sqlite = not self.database_url or self.database_url.startswith("sqlite")
        return 1 if is_sqlite else max(1, os.cpu_count() or 1)

    def verify_thread_count(self) -> int:
        if self.verify_threads is not None:
            return self.verify_threads
        return max(0, (os.cpu_count() or 1) - self.worker_count())

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as the constructor validates (the dataclass
        ``replace``; pydantic's ``model_copy(update=...)`` would not validate)."""
        return type(self)(**{**dict(self), **changes})

    def to_environment(self) -> dict[str, str]:
        """The environment variables that give these settings (``from_env`` reads them back)."""
        return {env_name(name): text(name, value) for name, value in self}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives (``os.environ`` by default); a bad value is a
        :class:`SettingError` naming its variable."""
        return load(env).settings


# -- reading the environment and the flags ---------------------------------------------------------
_FIELDS: dict[str, Setting] = {}


def setting(name: str) -> Setting:
    """The declaration of the field ``name``, with its environment variable filled in."""
    if not _FIELDS:
        for field_name, info in Settings.model_fields.items():
            (declared,) = [m for m in info.metadata if isinstance(m, Setting)]
            env = declared.env or ENV_PREFIX + field_name.upper()
            _FIELDS[field_name] = dataclasses.replace(declared, env=env)
    return _FIELDS[name]


def env_name(name: str) -> str:
    """The environment variable of setting ``name``."""
    return setting(name).env or ""


def names() -> list[str]:
    """The settings' field names, in their declaration's order."""
    return list(Settings.model_fields)


def text(name: str, value: object) -> str:
    """``value`` of setting ``name`` as its environment variable would say it."""
    return setting(name).kind.render(value)


def default(name: str) -> object:
    return Settings.model_fields[name].default


class EnvironmentSource(PydanticBaseSettingsSource):
    """The settings' environment variables in ``env``: the text of each one set. An empty value
    is unset, except for a :class:`Text` setting, where it is the value (``CONDPAY_DATABASE_URL=``
    is the embedded SQLite, ``CONDPAY_BRIDGE_CERTS_DIR=`` is its default)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        declared = setting(field_name)
        env = declared.env or ""
        value = self._env.get(env)
        if value is None or (not value.strip() and not isinstance(declared.kind, Text)):
            return None, env, False
        return value, env, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            value, _env, _complex = self.get_field_value(info, name)
            if value is not None:
                found[name] = value
        return found


class Source(enum.StrEnum):
    DEFAULT = "default"
    ENV = "env"
    FLAG = "flag"


@dataclass(frozen=True)
class Loaded:
    """The effective settings and, for each, where it came from."""

    settings: Settings
    sources: dict[str, Source] = field(default_factory=dict)


class SettingError(ValueError):
    """A bad value: ``str()`` is one line naming the variable or flag as given, the value, and
    what is allowed."""


def load(env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None) -> Loaded:
    """The settings from ``flags`` (text by field name, as :func:`flag_values` gives them) over
    ``env`` (``os.environ`` by default) over the defaults."""
    env = os.environ if env is None else env
    flags = flags or {}
    from_env = EnvironmentSource(Settings, env)()
    given = {**from_env, **flags}
    sources = {
        name: Source.FLAG if name in flags else Source.ENV if name in from_env else Source.DEFAULT
        for name in names()
    }

    def said(name: str) -> str:
        """How the user wrote setting ``name`` (or its default)."""
        declared = setting(name)
        if sources[name] is Source.FLAG:
            return f"{declared.flag}={given[name]!r}"
        if sources[name] is Source.ENV:
            return f"{declared.env}={given[name]!r}"
        return f"{declared.env}={text(name, default(name))} (the default)"

    try:
        settings = Settings(**given)
    except ValidationError as invalid:
        (name, *_) = invalid.errors()[0]["loc"]
        raise SettingError(f"{said(str(name))}: {invalid.errors()[0]['msg']}") from None
    try:
        check_pvp_timing(settings.pvp_hold_ms, settings.pvp_margin_ms)
    except ValueError:
        raise SettingError(
            f"{said('pvp_hold_ms')} with {said('pvp_margin_ms')}: the hold must be more than"
            f" twice the margin (here more than {2 * settings.pvp_margin_ms}), else every PvP"
            " settlement aborts (DECISION_DEADLINE)"
        ) from None
    return Loaded(settings, sources)


# -- derived: flags, help, the README table, config show -------------------------------------------
def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the settings that have one: each takes its text (a switch may go without,
    ``--insecure`` is ``--insecure=1``) and is absent from the namespace when not given."""
    for name in names():
        declared = setting(name)
        if declared.flag is None:
            continue
        extra = f"env {declared.env}; default {_default_text(name)}"
        if isinstance(declared.kind, Switch):
            parser.add_argument(
                declared.flag,
                dest=name,
                nargs="?",
                const="1",
                metavar=declared.kind.metavar,
                default=argparse.SUPPRESS,
                help=f"{declared.help} ({extra})",
            )
        else:
            parser.add_argument(
                declared.flag,
                dest=name,
                metavar=declared.kind.metavar,
                default=argparse.SUPPRESS,
                help=f"{declared.help} ({extra})",
            )


def flag_values(args: argparse.Namespace) -> dict[str, str]:
    """The flags given in ``args`` (parsed with :func:`add_flags`), by field name."""
    return {
        name: getattr(args, name)
        for name in names()
        if setting(name).flag is not None and hasattr(args, name)
    }


def _default_text(name: str) -> str:
    declared = setting(name)
    if declared.default_text is not None:
        return declared.default_text
    return text(name, default(name)) or "empty"


def environment_help() -> str:
    """The environment list of ``condpay serve --help``."""
    lines = ["environment (a flag, where there is one, takes precedence):"]
    for name in names():
        declared = setting(name)
        head = f"  {declared.env}={declared.kind.metavar}"
        if declared.flag:
            head += f"  ({declared.flag})"
        lines.append(head)
        body = f"{declared.help}; default {_default_text(name)}"
        lines += textwrap.wrap(body, width=92, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines.append(
        "A bad value stops the command with one line naming it (exit status 2); `condpay config\n"
        "show` prints the effective settings and where each comes from."
    )
    return "\n".join(lines) + "\n"


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def markdown_table() -> str:
    """README.md's settings table."""
    rows = [
        "| flag | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for name in names():
        declared = setting(name)
        metavar = declared.kind.metavar
        flag = ""
        if declared.flag is not None:
            flag = (
                f"`{declared.flag}`"
                if isinstance(declared.kind, Switch)
                else (f"`{declared.flag} {metavar}`")
            )
        environment = f"`{declared.env}={metavar}`"
        default_text = declared.default_text
        if default_text is None:
            written = text(name, default(name))
            default_text = f"`{written}`" if written else "empty"
        rows.append(
            f"| {_cell(flag)} | {_cell(environment)} | {_cell(default_text)} "
            f"| {_cell(declared.help)} |"
        )
    return "\n".join(rows) + "\n"


def mask(value: str) -> str:
    """A URL with its password hidden (``***``); text that is no URL is hidden whole."""
    if not value:
        return value
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(value).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "***"


def show(loaded: Loaded) -> str:
    """``condpay config show``: ``NAME=value  (source: default|env|flag)``, one a line, secrets
    masked."""
    lines = []
    for name, value in loaded.settings:
        declared = setting(name)
        rendered = text(name, value)
        if declared.secret:
            rendered = mask(rendered)
        lines.append(f"{declared.env}={rendered}  (source: {loaded.sources[name]})")
    return "\n".join(lines) + "\n"


def check_pvp_timing(hold_ms: int, margin_ms: int) -> None:
    """Refuse timings under which no settlement could ever commit. The coordinator reserves the
    bridge's leg for ``(decide_by - now) - margin_ms`` and only while that is more than
    ``margin_ms``; right after the hold ``decide_by - now`` is ``hold_ms``, so it needs
    ``hold_ms - margin_ms > margin_ms``, i.e. ``hold_ms > 2 * margin_ms``. Otherwise every
    settlement is aborted with DECISION_DEADLINE before the bridge is asked."""
    if margin_ms < 0:
        raise ValueError(f"CONDPAY_PVP_MARGIN_MS must not be negative (it is {margin_ms})")
    if hold_ms <= 2 * margin_ms:
        raise ValueError(
            f"CONDPAY_PVP_HOLD_MS ({hold_ms}) must be more than twice CONDPAY_PVP_MARGIN_MS "
            f"({margin_ms}): the bridge's reservation lasts CONDPAY_PVP_HOLD_MS - "
            "CONDPAY_PVP_MARGIN_MS and is made only while that is more than "
            "CONDPAY_PVP_MARGIN_MS, so with these values every settlement would abort "
            f"(DECISION_DEADLINE); raise CONDPAY_PVP_HOLD_MS above {2 * margin_ms} or lower "
            "CONDPAY_PVP_MARGIN_MS"
        )
