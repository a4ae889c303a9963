"""Ray lives here: the run's one session, resource checks, the two maps every stage runs on Ray
with, and the gang of Ray Train workers."""
