"""Ray Jobs entry point for a scheduled refresh: arguments and exit code of `delift-ray refresh`.

    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m pipelines.refresh --config pipelines/configs/refresh.yaml \\
        --set model.path=$PWD/.cache/demo-model --set refresh.root=$PWD/runs/refresh

As for pipelines.select: give paths every node can reach (absolute or object-store URIs).
"""

from __future__ import annotations

import sys

from delift_ray.cli import job_main

main = job_main("refresh")

if __name__ == "__main__":
    sys.exit(main())
