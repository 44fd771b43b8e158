"""Reserved for the infer capability (see the project's issues)."""
