"""Chapter 4: what a generator does, one step at a time: the shape of the
notes' client generators, driven by hand as their loop drives them."""
import inspect

# An iterable hands out iterators; an iterator is used up as it goes.
numbers = [1, 2]
iterator = iter(numbers)
print("iterator:", next(iterator), next(iterator), list(iterator),
      "iterable again:", list(numbers))


def client():
    """Yields what it waits for; each yield returns what the loop sends."""
    received = yield "WAIT_READ"
    print("the yield returned", repr(received))
    try:
        yield "WAIT_WRITE"
    except TimeoutError as e:
        print("throw() raised at the yield:", repr(e))
    return "done"


task = client()
print("state:", inspect.getgeneratorstate(task))
print("next() primes it:", next(task))
print("state:", inspect.getgeneratorstate(task))
print("send(b'hi') resumes it:", task.send(b"hi"))
try:
    task.throw(TimeoutError("idle"))
except StopIteration as stop:
    print("it returned: StopIteration, value", repr(stop.value))
print("state:", inspect.getgeneratorstate(task))


def read_line():
    data = yield "WAIT_READ"
    return data.upper()


def handler():
    # The sub-generator's yields pass through; its return value comes back.
    line = yield from read_line()
    print("yield from returned", repr(line))


outer = handler()
next(outer)
try:
    outer.send(b"ping")
except StopIteration:
    pass
