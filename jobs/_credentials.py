"""Credentials between daemons: one secret per queen, and a credential per hop derived from it.

The queen's secret (`cluster_secret`) is 32 random bytes in a 0600 file of its RBEE_HOME,
made by whichever of the queen or the keeper needs it first. Every daemon-to-daemon call
carries the credential of its hop, loopback included, so another local user's process
cannot forge a heartbeat or drive a hive or a worker:

    queen <-> hive    hive_credential(secret, hive_id): the hive's heartbeats and goodbye,
                      and the queen's calls to the hive. Bound to the hive's id, so a beat
                      can only describe the hive that sent it.
    queen -> worker   worker_credential(hive credential, worker_id): the hive hands each
                      worker its own, and the queen derives the same one from the beat that
                      lists the worker. A worker never sees the hive's or the queen's.

The keeper hands a hive its credential in the environment (locally) or on SSH's stdin
(remotely), never on a command line. HMAC-SHA256 keeps derivation one-way: a worker's
credential says nothing about its hive's, nor a hive's about the secret.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from hashlib import sha256
from pathlib import Path

from jobs._paths import FILE_MODE, RbeePaths, private_folder

SECRET_FILE = "queen.secret"  # in RbeePaths.state
HIVE_CREDENTIAL_ENV = "RBEE_HIVE_CREDENTIAL"  # how a hive receives its credential
WORKER_CREDENTIAL_ENV = "RBEE_WORKER_CREDENTIAL"  # how a worker receives its credential


def cluster_secret(paths: RbeePaths) -> str:
    """This RBEE_HOME's queen secret, created (0600, atomically) if it does not exist yet.

    Two processes creating it at once both end up with the one that was linked first.
    Raises StorageError (a full disk, an unwritable folder) when it cannot be made."""
    path = paths.state / SECRET_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        return _create(path)
    except OSError as exc:
        from jobs._disk import storage_error

        raise storage_error(path.parent, exc) from None


def _create(path: Path) -> str:
    private_folder(path.parent)
    temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def hive_credential(secret: str, hive_id: str) -> str:
    """The credential of the hop between the queen holding `secret` and hive `hive_id`."""
    return _derive(secret, f"hive:{hive_id}")


def worker_credential(hive_credential: str, worker_id: str) -> str:
    """The credential a caller presents to worker `worker_id` of the hive holding
    `hive_credential` (the hive and the queen can both derive it; the worker holds only it)."""
    return _derive(hive_credential, f"worker:{worker_id}")


def same_credential(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented credential with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _derive(key: str, label: str) -> str:
    return hmac.new(key.encode(), label.encode(), sha256).hexdigest()


def _read(path: Path) -> str:
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise ValueError(f"{path} is not a queen secret; remove it and start the queen again")
    return secret
