"""Chapter 5: coroutines, futures, tasks and the loop, one at a time."""
import asyncio
import concurrent.futures
import threading
import types


@types.coroutine
def wait_read():
    """A generator-based coroutine: what an await chain yields to its loop."""
    got = yield "WAIT_READ"
    return got


async def handler():
    # A native coroutine awaits a generator-based one: they mix.
    got = await wait_read()
    return f"handled {got!r}"


# No loop yet: drive the coroutine by hand, as a loop does.
coro = handler()
print("send(None) starts it; it yielded", repr(coro.send(None)))
try:
    coro.send(b"ping")
except StopIteration as stop:
    print("it returned: StopIteration, value", repr(stop.value))


async def sleeper():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        print("the task saw CancelledError at its await")
        raise


async def main():
    loop = asyncio.get_running_loop()

    # A future, a callback run when it is done, and a timer that sets it.
    future = loop.create_future()
    future.add_done_callback(lambda f: print("the done-callback saw", f.result()))
    loop.call_later(0.01, future.set_result, 42)
    print("awaited the future:", await future)

    # A timer cancelled before it is due never runs.
    handle = loop.call_later(0.01, print, "this never prints")
    handle.cancel()

    # A task cancelled while it waits.
    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print("cancelled:", task.cancelled())

    # A thread's future (concurrent.futures) wrapped for the loop (asyncio).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        thread_future = pool.submit(sum, [1, 2, 3])
        loop_future = asyncio.wrap_future(thread_future)
        kinds = [f"{type(f).__module__}.{type(f).__name__}" for f in (thread_future, loop_future)]
        print("a thread's", kinds[0], "awaited as", kinds[1], "->", await loop_future)

    # Another thread hands the loop a coroutine, and waits for its result.
    def from_a_thread():
        done = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01, result="slept"), loop)
        print("the thread got", repr(done.result(timeout=5)))

    thread = threading.Thread(target=from_a_thread)
    thread.start()
    await loop.run_in_executor(None, thread.join)

    # asyncio.Queue: the producer waits while the queue is full.
    queue = asyncio.Queue(maxsize=1)

    async def producer():
        for item in ("a", "b", "c", None):
            await queue.put(item)

    async def consumer():
        got = []
        while (item := await queue.get()) is not None:
            got.append(item)
        return got

    _, got = await asyncio.gather(producer(), consumer())
    print("the consumer got", got)
    return "main finished"


loop = asyncio.new_event_loop()
print("run_until_complete ->", loop.run_until_complete(main()))
loop.close()
