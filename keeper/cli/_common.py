"""What the command modules share: the settings of the invocation, and common options."""

from typing import Annotated

import typer

from keeper.settings import KeeperSettings

HiveOption = Annotated[str, typer.Option("--hive", help="Hive alias.")]
NoAutostart = Annotated[
    bool,
    typer.Option(
        "--no-autostart", help="Do not start a local queen and hive when none is running."
    ),
]


def settings_of(ctx: typer.Context) -> KeeperSettings:
    """The settings the root options built (defaults when a command runs without them)."""
    settings = ctx.find_root().obj
    return settings if isinstance(settings, KeeperSettings) else KeeperSettings()
