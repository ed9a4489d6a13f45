"""Which machine a hive alias names, and how to reach it over SSH (keeper and queen alike).

An alias resolves, in order: `localhost` (always this machine), a `[hives.ALIAS]` entry in
the hives config (`<config>/hives.toml`, shared with the queen, which reads only `url` and
`token`), then a `Host ALIAS` entry in the SSH config (asyncssh reads the rest of it:
HostName, User, Port, IdentityFile). Anything else is a usage error showing an entry to add.

    [hives.gpu1]
    host = "10.0.0.5"          # or an ~/.ssh/config Host alias
    user = "rbee"               # ssh user (default: the SSH config's, else yours)
    port = 22                   # ssh port
    hive_port = 7835            # where rbee-hive listens on that machine
    venv = "~/.rbee/venv"       # the venv `keeper hive install` creates there
    python = "python3"          # the interpreter `keeper hive install` creates it with
    queen_url = "http://10.0.0.1:7833"  # the queen as that machine reaches it
    token = "…"                 # the hive's own token (needed to bind beyond loopback)
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemons._errors import HostConfigError
from jobs import HIVE_PORT, HIVES_CONFIG, LOOPBACK, RbeePaths

LOCAL = "localhost"  # the hive on this machine, never reached over SSH
SSH_CONFIG_ENV = "RBEE_SSH_CONFIG"  # the SSH client config to read (default ~/.ssh/config)
KNOWN_HOSTS_ENV = "RBEE_KNOWN_HOSTS"  # the known_hosts file to verify with (default ~/.ssh/)
DEFAULT_HOME = "~/.rbee"  # RBEE_HOME on the remote: its venv, logs, pidfiles, models
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # as jobs.ID_PATTERN
STRING_KEYS = ("host", "user", "venv", "python", "queen_url", "token", "home", "bind", "url")
INT_KEYS = ("port", "hive_port")

Source = Literal["local", "hives config", "ssh config"]


@dataclass(frozen=True, slots=True)
class HiveHost:
    """Everything needed to run a hive on one machine.

    `ssh_host` is what asyncssh connects to (a name the SSH config may map further);
    `user` and `port` None leave them to the SSH config and its defaults. Paths starting
    with `~/` are relative to the remote user's home.
    """

    alias: str
    source: Source
    ssh_host: str = LOCAL
    user: str | None = None
    port: int | None = None
    hive_port: int = HIVE_PORT
    home: str = DEFAULT_HOME
    venv: str | None = None
    python: str | None = None
    queen_url: str | None = None
    token: str | None = None
    bind: str | None = None
    url: str | None = None

    @property
    def is_local(self) -> bool:
        return self.source == "local"

    @property
    def venv_path(self) -> str:
        """The remote venv: configured, else `<home>/venv` (where `hive install` puts it)."""
        return self.venv or f"{self.home.rstrip('/')}/venv"

    @property
    def bind_address(self) -> str:
        """Loopback unless configured; a hive with a token listens on every address."""
        return self.bind or ("0.0.0.0" if self.token else LOOPBACK)


def sample_entry(alias: str) -> str:
    """The hives config entry a user would add for `alias` (shown in errors and docs)."""
    return (
        f'[hives.{alias}]\nhost = "192.0.2.10"  # or a Host alias from ~/.ssh/config\n'
        f'user = "rbee"\nhive_port = {HIVE_PORT}'
    )


def config_path() -> Path:
    return RbeePaths.resolve().config / HIVES_CONFIG


def ssh_config_path() -> Path:
    return Path(os.environ.get(SSH_CONFIG_ENV) or "~/.ssh/config").expanduser()


def known_hosts_path() -> Path:
    return Path(os.environ.get(KNOWN_HOSTS_ENV) or "~/.ssh/known_hosts").expanduser()


def resolve(alias: str) -> HiveHost:
    """The machine `alias` names. Raises HostConfigError (with a sample entry) when unknown."""
    if alias == LOCAL:
        return HiveHost(LOCAL, "local")
    if not re.fullmatch(ALIAS_PATTERN, alias):
        raise HostConfigError(
            f"hive alias {alias!r} is not a name: use letters, digits, '.', '_' or '-'"
        )
    entries = configured_hives()
    if alias in entries:
        return _from_entry(alias, entries[alias])
    if alias in ssh_config_aliases():
        return HiveHost(alias, "ssh config", ssh_host=alias)
    raise HostConfigError(
        f"hive {alias!r} is not in {config_path()} nor a Host in {ssh_config_path()}; "
        f"add an entry such as:\n{sample_entry(alias)}"
    )


def configured_hives() -> dict[str, dict[str, Any]]:
    """The `[hives.*]` tables of the hives config; no file means none."""
    path = config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HostConfigError(
            f"cannot read the hives config {path} ({exc}); fix or remove it"
        ) from None
    section = data.get("hives", {})
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise HostConfigError(f"{path}: write each hive as a [hives.ALIAS] table")
    return section


def ssh_config_aliases() -> list[str]:
    """The plain `Host` names of the SSH config (patterns with * or ? are not aliases)."""
    try:
        text = ssh_config_path().read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        words = line.strip().replace("=", " ").split()
        if len(words) > 1 and words[0].lower() == "host":
            found += [w for w in words[1:] if not any(c in w for c in "*?!")]
    return found


def _from_entry(alias: str, entry: dict[str, Any]) -> HiveHost:
    where = f"{config_path()} [hives.{alias}]"
    values: dict[str, Any] = {}
    for key in STRING_KEYS:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise HostConfigError(f'{where} {key} must be a string, e.g. {key} = "…"')
        values[key] = value
    for key in INT_KEYS:
        value = entry.get(key)
        if value is not None and (not isinstance(value, int) or not 0 < value < 65536):
            raise HostConfigError(f"{where} {key} must be a TCP port number (1-65535)")
        values[key] = value
    return HiveHost(
        alias,
        "hives config",
        ssh_host=values["host"] or alias,
        user=values["user"],
        port=values["port"],
        hive_port=values["hive_port"] or HIVE_PORT,
        home=values["home"] or DEFAULT_HOME,
        venv=values["venv"],
        python=values["python"],
        queen_url=values["queen_url"],
        token=values["token"],
        bind=values["bind"],
        url=values["url"],
    )


def configured_hosts() -> list[HiveHost]:
    """The hives configured for rbee: localhost, then every hives config entry (what `hive
    list` shows). SSH config hosts are not hives until named: most are other machines
    (github.com), though `resolve` takes any of them as a target."""
    entries = configured_hives()
    hosts = [HiveHost(LOCAL, "local")]
    hosts += [_from_entry(alias, entry) for alias, entry in entries.items() if alias != LOCAL]
    return hosts
