"""The built-in evaluation suites, one module each; each registers itself in :data:`xlt.eval.registry.SUITES`."""
