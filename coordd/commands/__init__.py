"""Subcommands of the ``coordd`` command, one module each (see ``coordd.cli``)."""
