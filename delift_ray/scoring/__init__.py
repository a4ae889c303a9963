"""Stage 2: DELIFT utilities. Pairs -> plan against the block store -> score -> reduce."""
