"""Choosing a recipe when the user names none.

Every run follows a named recipe of ``botnet/configs``: the one ``--config`` names, or, without it,
the one a task's rule picks from the data (a small training set gets a small-data recipe). The
rule sees the defaults with the user's flags applied, so it reads the data paths and the model the
user gave; the run then loads the chosen recipe under those same flags, so an explicit flag always
wins over the recipe's value. A task's config class names its default recipe
(``TrainConfig.recipe``), whose values are the dataclass defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

from botnet.engine.config import load_config

C = TypeVar("C")


@dataclass(frozen=True)
class RecipeChoice:
    #: a shipped recipe (``botnet/configs/<name>.yaml``)
    name: str
    #: why it was chosen, with the counts the rule looked at
    reason: str
    #: where the recipes are described
    docs: str = "docs/training.md"

    def line(self) -> str:
        """The run's first line: the recipe, why, and how to pick another."""
        return f"recipe {self.name}: {self.reason}; --config NAME picks another ({self.docs})"


def choose_run_config(cls: type[C], overrides: Iterable[str],
                      rule: Callable[[C], RecipeChoice]) -> tuple[C, RecipeChoice]:
    """The config of a run that names no recipe: ``rule`` picks one from the defaults with
    ``overrides`` applied, and the run is that recipe with the same ``overrides`` on top."""
    overrides = list(overrides)
    choice = rule(load_config(cls, None, overrides, warn=False))  # the line comes once, below
    return load_config(cls, choice.name, overrides), choice
