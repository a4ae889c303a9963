"""`python -m delift_ray <command> ...`: the `delift-ray` command, for `ray job submit` too."""

import sys

from delift_ray.cli import main

sys.exit(main())
