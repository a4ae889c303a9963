"""The `ray job submit` entry points (`python -m pipelines.<command>` from the repository, or
`python -m delift_ray.pipelines.<command>` from the installed package), the shipped configs and
the demo data."""
