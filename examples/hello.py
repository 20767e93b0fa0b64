"""An ordinary asyncio program: nothing in it mentions iocploop.

    python -m iocploop examples/hello.py
"""
import asyncio
import sys
import time


async def tick(name: str, delay: float, count: int) -> list[str]:
    seen = []
    for i in range(count):
        await asyncio.sleep(delay)
        seen.append(f"{name}{i}")
    return seen


async def main() -> None:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    results = await asyncio.gather(tick("a", 0.01, 3), tick("b", 0.015, 2))
    total = await loop.run_in_executor(None, sum, range(1000))
    addr = (await loop.getaddrinfo("127.0.0.1", 80))[0][4]
    print(f"loop: {type(loop).__module__}.{type(loop).__name__}")
    print(f"timers: {results}; executor: {total}; getaddrinfo: {addr}")
    print(f"argv: {sys.argv[1:]}; took {time.perf_counter() - start:.3f}s")


if __name__ == "__main__":
    asyncio.run(main())
