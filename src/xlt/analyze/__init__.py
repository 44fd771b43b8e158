"""Reserved for the analyze capability (see the project's issues)."""
