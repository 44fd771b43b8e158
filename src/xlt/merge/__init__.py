"""Reserved for the merge capability (see the project's issues)."""
