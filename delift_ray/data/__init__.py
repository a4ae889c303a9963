"""Stage 1 of a run: read and validate rows, render them as (prompt, response), write subsets."""
