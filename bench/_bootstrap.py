"""Imported first by a benchmark run as a script (``python bench/<name>.py``).

Python then puts ``bench/`` first on ``sys.path``, where ``bench/ingest.py`` and
``bench/transforms.py`` would shadow the ``ingest`` and ``transforms`` packages. This takes
``bench/`` off ``sys.path`` and puts the repository first, so ``import ingest`` and
``import bench._common`` resolve as from the repository root. Each script does::

    if __package__ in (None, ""):  # run as a script, not as ``python -m bench.<name>``
        import _bootstrap  # noqa: F401

(``_bootstrap`` is found in ``bench/`` because that directory is still first at that point.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))
