"""Built-in merge methods, one module each; :data:`xlt.merge.registry.MERGES` imports them on first lookup and
each registers itself with :func:`~xlt.merge.registry.register_merge`."""
