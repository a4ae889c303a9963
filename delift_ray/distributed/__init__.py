"""Ray lives here: the one session, resource checks, and the maps every stage runs on Ray with."""
