"""iocploop's benchmarks: run side by side with asyncio and uvloop (see README)."""
