"""Sub-commands of the ``keel`` CLI, one module per group; :mod:`keel.cli` registers them."""
