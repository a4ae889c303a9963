"""Ray Jobs entry point for one evaluation: the arguments and exit code of `delift-ray eval`.

Launch from the repository root against a running cluster (dashboard address), here on the
model a training run wrote:

    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m pipelines.eval --config pipelines/configs/compare.yaml \\
        --set eval.model_path=$PWD/runs/instruction-train/model \\
        --set output_dir=$PWD/runs/instruction-eval

The job runs in an unpacked copy of the working dir, without what .gitignore lists (.venv,
.cache, runs): give eval.model_path, eval.test.path and output_dir as absolute paths every node
can reach. Ray sets RAY_ADDRESS for the job, so generation runs on that cluster's actors; run
outside Ray this module behaves exactly like `delift-ray eval`.
"""

from __future__ import annotations

import sys

from delift_ray.cli import job_main

main = job_main("eval")

if __name__ == "__main__":
    sys.exit(main())
