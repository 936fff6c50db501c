"""The Docker executor: one locked-down participant container per job, through aiodocker."""
