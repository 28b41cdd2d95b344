"""An example Keel plug-in: the ``ridge`` flavor and the ``ordinal`` task (see pyproject.toml)."""

from keel_example_plugin.ordinal import OrdinalTask
from keel_example_plugin.ridge import RidgeTrainer

__all__ = ["OrdinalTask", "RidgeTrainer"]
