"""Benchmarks of sensorlake (issue 4). Each is a script: ``python bench/<name>.py --help``.

Not part of the installed package: the scripts run from a source checkout, against the
local stack (``sensorlake stack up``), and create (and remove) their own topics,
databases, lake directory and Redis namespace.
"""
