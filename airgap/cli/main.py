"""The ``airgap`` command: options, sub-commands, and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from typing import TextIO

import click

from airgap import __version__
from airgap.errors import AirgapError

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70

# Sub-commands, imported when used: a command then loads only what it needs (a no-op import starts in
# a third of the time it takes to load everything).
COMMANDS = {
    "login": "airgap.cli.login:login_cmd",
    "copy": "airgap.cli.copy:copy_cmd",
    "keygen": "airgap.cli.keys:keygen_cmd",
    "export": "airgap.cli.export:export_cmd",
    "verify": "airgap.cli.verify:verify_cmd",
    "repair": "airgap.cli.repair:repair_cmd",
    "inspect": "airgap.cli.verify:inspect_cmd",
    "import": "airgap.cli.importing:import_cmd",
    "inventory": "airgap.cli.inventory:inventory_cmd",
}
TALKS_TO_REGISTRIES = frozenset({"login", "copy", "export", "import", "inventory"})
# Commands that leave work behind to continue; the others change nothing until they end (or only check)
RESUMABLE = frozenset({"copy", "export", "import", "repair"})
_invoked: dict[str, str] = {}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        if cmd_name in TALKS_TO_REGISTRIES:
            from airgap import tls

            tls.prepare()  # the trust store loads on another core while the command's modules load
        command: click.Command = getattr(importlib.import_module(module), attr)
        if not any(p.name in _FLAGS for p in command.params):
            command.params.extend(_flags())  # `airgap export ... --debug` works as well as `airgap --debug export`
        return command


_FLAGS = {"debug": "Log every registry exchange (secrets never) and show tracebacks.",
          "quiet": "Print only errors."}


def _debug_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("airgap").setLevel(logging.DEBUG)


def _flag_given(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """A sub-command's ``--debug`` or ``--quiet``: the same as the group's."""
    if value:
        ctx.ensure_object(dict)[param.name] = True
        if param.name == "debug":
            _debug_logging()


def _flags() -> list[click.Parameter]:
    return [click.Option(["--debug"], is_flag=True, expose_value=False, callback=_flag_given, help=_FLAGS["debug"]),
            click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, callback=_flag_given,
                         help=_FLAGS["quiet"])]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="airgap")
@click.option("--debug", is_flag=True, help=_FLAGS["debug"])
@click.option("--quiet", "-q", is_flag=True, help=_FLAGS["quiet"])
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Move container images across an air gap: signed, chunked, resumable bundles."""
    ctx.obj = {"debug": debug, "quiet": quiet}
    _invoked["command"] = ctx.invoked_subcommand or ""
    if debug:
        _debug_logging()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings (an unencrypted key readable by others, ...) as one ``airgap: warning:`` line on stderr,
    not Python's two-line ``file:line: Category: text`` form."""
    text = " ".join(str(message).split())
    if not category.__module__.startswith("airgap"):
        text = f"{category.__name__}: {text}"
    click.echo(f"airgap: warning: {text}", err=True)


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    # SIGTERM (a service manager, a cancelled CI job) stops a run as Ctrl-C does: cleanly, resumable
    on_term = signal.signal(signal.SIGTERM, signal.default_int_handler) if _main_thread() else None
    try:
        return _main(argv, debug)
    finally:
        warnings.showwarning = previous
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


def _interrupted_line() -> str:
    if _invoked.get("command", "") in RESUMABLE:
        return "airgap: interrupted; run the same command again to resume"
    return "airgap: interrupted; nothing was left half-done: run the same command again"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _main(argv: list[str] | None, debug: bool) -> int:
    _invoked.clear()
    try:
        cli.main(args=argv, prog_name="airgap", standalone_mode=False)
    except AirgapError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"airgap: error: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(_interrupted_line(), err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # worker threads may be in the middle of a transfer: leave now (everything written is resumable)
        os._exit(EXIT_INTERRUPTED)
    except click.UsageError as exc:  # one line, like every other error
        command = exc.ctx.command_path if exc.ctx is not None else "airgap"
        click.echo(f"airgap: error: {exc.format_message()} (see `{command} --help`)", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"airgap: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if debug:
            traceback.print_exc()
        click.echo(f"airgap: internal error: {type(exc).__name__}: {exc} (run again with --debug and report it)",
                   err=True)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
