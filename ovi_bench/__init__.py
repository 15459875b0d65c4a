"""ovi-bench: the harness that runs, measures and judges Ovi engines (see README.md and DESIGN in docs/)."""
