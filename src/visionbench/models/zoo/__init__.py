"""The built-in models: each module here registers its models (``models.registry.register``)."""
