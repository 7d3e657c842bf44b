"""The commands as a user runs them: flags, refusals, safety of the user's files."""
