"""`edge run` exactly as installed (edge.cli.main), with one test-only knob: the rollback
windows of a configuration on trial scaled by argv[1] (edge.agent.Agent's rollback_time_scale,
as the firmware's settings.time_scale), so a compressed scenario can watch a trial end or a
broken configuration roll back in seconds instead of the schema's 60 s minimum.

    python tests/e2e/edge_run.py 0.05 run --config gateway.toml
"""

from __future__ import annotations

import sys
from typing import Any

from edge import agent, cli


def main() -> int:
    scale = float(sys.argv[1])
    real = agent.Agent

    class ScaledAgent(real):  # type: ignore[valid-type,misc]
        def __init__(self, settings: Any, **_: Any) -> None:
            super().__init__(settings, rollback_time_scale=scale)

    agent.Agent = ScaledAgent  # type: ignore[misc]
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
