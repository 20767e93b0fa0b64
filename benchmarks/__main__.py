"""python -m benchmarks: the loop micro-benchmarks (more suites join with later milestones)."""
from .micro import main

main()
