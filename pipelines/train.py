"""Ray Jobs entry point for one fine-tuning run: the arguments and exit code of `delift-ray train`.

Launch from the repository root against a running cluster (dashboard address), here on the
subset a selection run wrote:

    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m pipelines.train --config pipelines/configs/instruction.yaml \\
        --set model.path=$PWD/.cache/demo-model --set train.subset=$PWD/runs/instruction \\
        --set output_dir=$PWD/runs/instruction-train

The job runs in an unpacked copy of the working dir, without what .gitignore lists (.venv,
.cache, runs): give model.path, train.subset and output_dir as absolute paths every node can
reach (Ray Train's checkpoints go to train.storage_path, by default <output_dir>/train). Ray sets
RAY_ADDRESS for the job, so the TorchTrainer runs on that cluster; run outside Ray this module
behaves exactly like `delift-ray train` (a local Ray is started for the run).
"""

from __future__ import annotations

import sys

from delift_ray.cli import job_main

main = job_main("train")

if __name__ == "__main__":
    sys.exit(main())
