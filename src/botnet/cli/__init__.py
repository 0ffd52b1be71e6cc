"""The ``botnet`` command: a thin dispatcher over library calls.

Each command family lives in its own module under ``botnet.cli`` and exposes
``register(cli: CLI)``. Commands are either top-level (``botnet profile``) or per task
(``botnet train cls``, ``botnet eval det``). A command's handler receives the parsed
``argparse.Namespace`` and returns an exit code (or None for 0).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from botnet.errors import UserError

# Command modules, in help order.
COMMAND_MODULES = [
    "botnet.cli.demo",
    "botnet.cli.cls",
    "botnet.cli.det",
    "botnet.cli.data",
    "botnet.cli.profile",
    "botnet.cli.export",
    "botnet.cli.attention",
    "botnet.cli.convert",
    "botnet.cli.models",
]

TASK_VERBS = {
    "train": "train a model",
    "eval": "evaluate weights on a dataset",
    "predict": "run a model on images",
}


class CLI:
    """Collects sub-commands from the command modules."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser(
            prog="botnet", description="Bottleneck Transformers: models, training, evaluation, export."
        )
        from botnet import __version__

        self.parser.add_argument("--version", action="version", version=f"botnet {__version__}")
        self._commands = self.parser.add_subparsers(dest="command", metavar="COMMAND")
        self._commands.required = True
        self._task_subparsers: dict[str, argparse._SubParsersAction] = {}

    def command(self, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        """A top-level command: ``botnet NAME ...``."""
        return self._commands.add_parser(name, help=help, description=help, **kwargs)

    def task_command(self, verb: str, task: str, help: str, **kwargs) -> argparse.ArgumentParser:
        """A per-task command: ``botnet VERB TASK ...`` (verb in train/eval/predict)."""
        if verb not in self._task_subparsers:
            p = self._commands.add_parser(verb, help=TASK_VERBS.get(verb, verb))
            sp = p.add_subparsers(dest="task", metavar="TASK")
            sp.required = True
            self._task_subparsers[verb] = sp
        return self._task_subparsers[verb].add_parser(task, help=help, description=help, **kwargs)


def build_cli() -> CLI:
    cli = CLI()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(cli)
    return cli


def main(argv: list[str] | None = None) -> int:
    cli = build_cli()
    args = cli.parser.parse_args(argv)
    try:
        code = args.func(args)
    except UserError as e:
        print(f"botnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # a training command puts the way to resume into the interruption
        print("botnet: interrupted" + (f"; {e.args[0]}" if e.args else ""), file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
