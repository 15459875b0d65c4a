"""`python -m ovi_bench ...`: the CLI without installing the package (e.g. on a GPU host with PYTHONPATH)."""

from ovi_bench.cli import main

main(prog_name="ovi-bench")
