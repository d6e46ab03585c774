"""Store contract tests: one suite, run against every back end."""
