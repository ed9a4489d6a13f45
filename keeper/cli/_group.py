"""The command tree's root group: its options are read after the command too."""

from typer import _click  # Typer's own copy of click: the classes its commands are built on
from typer._click.exceptions import BadOptionUsage
from typer.core import TyperGroup


class KeeperGroup(TyperGroup):
    """The command tree's root: its options (--json, --no-color, --queen-url, -v) are read
    after the command too (`keeper status --json`), up to `--` or `keeper run`'s command,
    which belong to the command (keeper.run_argv reads `keeper run` the same way)."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_root_options(self, ctx, args))


def hoist_root_options(root: TyperGroup, ctx: _click.Context, args: list[str]) -> list[str]:
    """`args` with the root's options that follow a command moved before it.

    Walks the command path so that an option's value (`--stop --json`) and a command's
    own option of the same name stay where they are; stops at `--`, at an unknown command
    and at the first argument of a command that reads none after it (`run`).
    """
    root_options = _options(root)
    command: _click.Command = root
    hoisted: list[str] = []
    kept: list[str] = []
    at = 0
    while at < len(args) and args[at] != "--":
        arg = args[at]
        name = arg.partition("=")[0] if arg.startswith("--") else arg
        own = _options(command)
        if command is not root and name not in own and name in root_options:
            size = 2 if root_options[name] and "=" not in arg else 1
            if at + size > len(args):  # before the command, it would take the command's name
                raise BadOptionUsage(name, f"Option {name!r} requires an argument.", ctx)
            hoisted += args[at : at + size]
            at += size
            continue
        if arg.startswith("-") and arg != "-":
            size = 2 if own.get(name) and "=" not in arg else 1
            kept += args[at : at + size]  # an option of this command, with its value
            at += size
            continue
        kept.append(arg)
        at += 1
        if isinstance(command, TyperGroup):
            found = command.get_command(ctx, arg)
            if found is None:
                break  # not a command: Typer says so
            command = found
        elif not command.context_settings.get(
            "allow_interspersed_args", command.allow_interspersed_args
        ):
            break  # `run CMD ...`: what follows is the command's
    return [*hoisted, *kept, *args[at:]]


def _options(command: _click.Command) -> dict[str, bool]:
    """Each option name of `command` (`--json`, `--no-json`), and whether it takes a value."""
    names: dict[str, bool] = {}
    for param in command.params:
        if param.param_type_name == "option":
            flag = bool(getattr(param, "is_flag", False) or getattr(param, "count", False))
            for name in (*param.opts, *param.secondary_opts):
                names[name] = not flag
    return names
