"""python -m benchmarks: every benchmark suite in one run (see benchmarks/suite.py)."""
from .suite import main

main()
