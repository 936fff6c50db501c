"""The autoscorer command line: composes the scorer registry and executors on one machine."""
