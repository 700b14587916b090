"""The subcommand registry: each command module registers ``configure(parser)`` and its ``run`` with
``@command``; ``harness.cli.main`` imports the modules and builds the parser. Kept apart from ``main`` so that
command modules import the registry, never the module that imports them."""

from __future__ import annotations

from typing import Callable

COMMANDS: dict[str, tuple[Callable, Callable, str]] = {}


def command(name: str, help: str):
    """Register ``configure(parser)`` as the arguments of subcommand ``name``; its ``run`` is attached."""

    def wrap(configure):
        def attach(run):
            COMMANDS[name] = (configure, run, help)
            return run

        configure.run = attach
        return configure

    return wrap
