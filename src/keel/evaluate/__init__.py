"""Evaluation: metrics with bootstrap intervals (``bootstrap``), calibration and residuals
(``calibration``), worst slices (``slices``), fairness (``fairness``), challenger against
champion (``comparison``), promotion gates on dotted paths (``gates``), and the stored
:class:`~keel.evaluate.evaluation.Evaluation` that ties them together (``evaluation``)."""
