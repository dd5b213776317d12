"""The ``airgap`` command: options, sub-commands, and the one place errors become exit codes."""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from typing import TextIO

import click

from airgap import __version__
from airgap.cli.copy import copy_cmd
from airgap.cli.export import export_cmd
from airgap.cli.importing import import_cmd
from airgap.cli.inventory import inventory_cmd
from airgap.cli.keys import keygen_cmd
from airgap.cli.login import login_cmd
from airgap.cli.repair import repair_cmd
from airgap.cli.verify import inspect_cmd, verify_cmd
from airgap.errors import AirgapError

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="airgap")
@click.option("--debug", is_flag=True, help="Log every registry exchange (secrets never) and show tracebacks.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Move container images across an air gap: signed, chunked, resumable bundles."""
    ctx.obj = {"debug": debug, "quiet": quiet}
    if debug:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger("airgap").setLevel(logging.DEBUG)


for command in (login_cmd, copy_cmd, keygen_cmd, export_cmd, verify_cmd, repair_cmd, inspect_cmd, import_cmd,
                inventory_cmd):
    cli.add_command(command)


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
    try:
        return _main(argv, debug)
    finally:
        warnings.showwarning = previous


def _main(argv: list[str] | None, debug: bool) -> int:
    try:
        cli.main(args=argv, prog_name="airgap", standalone_mode=False)
    except AirgapError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"airgap: error: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("airgap: interrupted; run the same command again to resume", err=True)
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
