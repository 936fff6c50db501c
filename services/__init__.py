"""AutoScorer services: gateway, scheduler, executor, scorer, and the CLI that composes them."""
