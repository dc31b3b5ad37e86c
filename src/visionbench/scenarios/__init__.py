"""Scenarios: the study and sweep (``study``), ``tune``, ``accuracy`` and ``mlperf``, each one
small class over the one driver in ``base`` that opens the run, records, keeps failures and
unsupported cells as results, and finishes it (Ctrl-C included)."""
