"""Monitoring: the prediction log in windows (``window``), counted on the training bins
(``counts``), drift per feature with tests and BH control (``drift``, ``significance``),
performance estimated before labels (``cbpe``, ``calibrate``), assembled by ``report`` and run
for a project's model by ``check``."""
