"""coordd from a shell: ``coordd health|claims|memory|context|watch|agreements``.

The commands are a thin face on the Python client (base install: no database driver, no
index), in the style of etcdctl and kubectl: human tables by default, ``--json`` for scripts,
errors in one line with their gRPC code and coordd reason, and exit codes a script can act on:

====  ==================================================================================
code  meaning
====  ==================================================================================
0     success
1     coordd refused or failed the call (a failed precondition, a conflict, an internal
      error): the line printed names the code and reason
2     usage: bad flags or arguments, refused by the command line or by coordd
      (``INVALID_ARGUMENT``, e.g. a malformed namespace)
3     not found: no live claim, no such memory key, no such agreement
4     unavailable: the daemon cannot be reached, went away, or did not answer in time
5     not allowed: ``PERMISSION_DENIED`` or ``UNAUTHENTICATED``
130   interrupted (Ctrl-C); ``watch`` ends with 0 when you stop it
====  ==================================================================================

Each command module has ``configure(parser)``, which adds its arguments and sets the
``shell_run`` default to an ``async (args) -> int`` function. The modules import only the
standard library at the top, so building the ``coordd`` parser never loads the client or gRPC:
a command imports them when it runs (``_flags.connect``, ``_runner.execute``).
"""

from __future__ import annotations

import argparse
import importlib

from coordd.shell._flags import EXIT_CODES

# name -> (module, one-line help), in the order `coordd --help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "health": ("coordd.shell.health", "check that the daemon answers"),
    "claims": ("coordd.shell.claims", "list, read and force-release claims"),
    "memory": ("coordd.shell.memory", "read memory: get, list, history, search"),
    "context": ("coordd.shell.context", "read context: an inbox, or what an agent sent"),
    "watch": ("coordd.shell.watch", "follow a namespace's change log, one line per event"),
    "agreements": ("coordd.shell.agreements", "read agreements and their votes"),
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add every shell command to the ``coordd`` command (``coordd.cli.COMMANDS``)."""
    for name in COMMANDS:
        add_command(sub, name)


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str) -> None:
    """Add one shell command (*name*, a key of ``COMMANDS``) to *sub*."""
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = sub.add_parser(
        name,
        help=summary,
        description=module.__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.configure(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the shell command *args* was parsed for; returns the exit code."""
    from coordd.shell._runner import execute

    return execute(args)
