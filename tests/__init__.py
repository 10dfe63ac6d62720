"""The test suite (a regular package, so a dependency that ships a top-level `tests` package cannot shadow it)."""
