"""The built-in data builders, one module each (each registers itself with :func:`xlt.data.registry.register_builder`)."""
