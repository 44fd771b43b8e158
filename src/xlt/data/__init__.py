"""Reserved for the data capability (see the project's issues)."""
