"""Ray Jobs entry point for a comparison: the arguments and exit code of `delift-ray compare`.

Launch from the repository root against a running cluster (dashboard address):

    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m pipelines.compare --config pipelines/configs/compare.yaml \\
        --set model.path=$PWD/.cache/demo-model --set output_dir=$PWD/runs/compare

The job runs in an unpacked copy of the working dir, without what .gitignore lists (.venv,
.cache, runs): give model.path and output_dir as absolute paths every node can reach (every
selection, fine-tuning and evaluation writes under output_dir). Ray sets RAY_ADDRESS for the
job, so the Ray stages run on that cluster; run outside Ray this module behaves exactly like
`delift-ray compare` (one local Ray is started for the sub-runs that are not reused).
"""

from __future__ import annotations

import sys

from delift_ray.cli import job_main

main = job_main("compare")

if __name__ == "__main__":
    sys.exit(main())
