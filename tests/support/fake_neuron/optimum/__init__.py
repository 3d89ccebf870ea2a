"""FAKE optimum package for contract tests (see ../README.md): not the real optimum."""
