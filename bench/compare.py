"""Seed design vs our app, side by side on one machine, in one Ray session.

    .venv/bin/python bench/compare.py            # full run (~4-8 min on 2 cores)
    .venv/bin/python bench/compare.py --quick    # ~1-2 min, fewer requests

Both designs run in the same Ray session with the same model (the app's ``model_id``, ``embedded``
in the chart's local scenario), the same steps, guidance, size and prompt sequence, and the same
replicas and ``ray_actor_options``. Our app is deployed from the serveConfigV2 that the Helm chart
renders for its local CPU scenario (``helm_python``, no helm binary); if the chart does not render, the
run stops and says why. Concurrency levels are measured with a closed-loop client, alternating which
design goes first at each level so that background load on a shared machine drifts over both.
The code lives in the ``bench.comparison`` package.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.comparison.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
