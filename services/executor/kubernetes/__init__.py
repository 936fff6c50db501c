"""The Kubernetes executor: one batch/v1 Job per participant run, through kubernetes-asyncio.

``backend`` is the executor (its ``BACKEND`` is what the registry's ``kubernetes`` alias loads);
``config``, ``client`` and ``api`` reach the API server; ``manifest`` and ``names`` build the Job;
``watch``, ``status`` and ``verdict`` turn pod events into an outcome; ``logs`` saves the log.
"""
