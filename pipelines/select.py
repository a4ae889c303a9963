"""Ray Jobs entry point for one selection run: the arguments and exit code of `delift-ray select`.

Launch from the repository root against a running cluster (dashboard address):

    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m pipelines.select --config pipelines/configs/instruction.yaml \\
        --set model.path=$PWD/.cache/demo-model --set output_dir=$PWD/runs/instruction

The job runs in an unpacked copy of the working dir, without what .gitignore lists (.venv,
.cache, runs): give model.path and output_dir as absolute paths every node can reach. Ray sets
RAY_ADDRESS for the job, so the library's Ray stages join that cluster; run outside Ray this
module behaves exactly like `delift-ray select` (a local Ray is started only where needed).
"""

from __future__ import annotations

import sys

from delift_ray.cli import job_main

main = job_main("select")

if __name__ == "__main__":
    sys.exit(main())
