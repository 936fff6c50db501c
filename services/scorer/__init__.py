"""The scorer service: the plugin registry (with hot reload) and the built-in scorers."""
