"""Ray Jobs entry point for a scheduled refresh: arguments and exit code of `delift-ray refresh`.

    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m pipelines.refresh --config pipelines/configs/refresh.yaml \\
        --set model.path=$PWD/.cache/demo-model --set refresh.root=$PWD/runs/refresh

As for pipelines.select: give paths every node can reach (absolute or object-store URIs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from delift_ray.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run `delift-ray refresh` with these arguments and return its exit code."""
    return cli_main(["refresh", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
