"""The ``mux-kernels`` command: one subcommand per job, each defined in its own module.

A module adds its subcommand with ``register(subparsers)``: it adds a parser and sets ``func``, which
takes the parsed arguments and returns the exit code. Add new modules to ``COMMANDS``.
"""

from __future__ import annotations

import argparse

from . import bench_report
from .training import commands as training_commands

COMMANDS = (bench_report, training_commands)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mux-kernels", description="Fused multiplexing kernels and MUX-BERT.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)
