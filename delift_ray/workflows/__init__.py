"""What a command runs, start to end: select, refresh, compare; and what they write."""
