"""The built-in analyses, each registered by name in :data:`xlt.analyze.registry.ANALYSES`."""
