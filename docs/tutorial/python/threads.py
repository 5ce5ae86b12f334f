"""Chapter 2: a producer and a consumer on a bounded queue; a condition
variable and a semaphore; the reference counts the GIL protects; a
daemon thread that does not keep the process alive."""
import queue
import sys
import threading
import time

# The producer blocks on put() while the queue is full: back-pressure.
jobs = queue.Queue(maxsize=2)
done = []


def consumer():
    while (job := jobs.get()) is not None:
        done.append(job)


worker = threading.Thread(target=consumer)
worker.start()
for job in range(5):
    jobs.put(job)
jobs.put(None)
worker.join()
print("the consumer took", done, "through a queue of", jobs.maxsize)

# A condition variable: the waiter sleeps until told, and checks again.
ready = []
changed = threading.Condition()


def waiter():
    with changed:
        changed.wait_for(lambda: ready)
        print("the waiter woke to", ready)


thread = threading.Thread(target=waiter)
thread.start()
with changed:
    ready.append("a job")
    changed.notify()
thread.join()

# A semaphore of 2: five threads, never more than two inside at once.
seats = threading.Semaphore(2)
inside, most = 0, 0
count = threading.Lock()


def visitor():
    global inside, most
    with seats:
        with count:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)
        with count:
            inside -= 1


visitors = [threading.Thread(target=visitor) for _ in range(5)]
for thread in visitors:
    thread.start()
for thread in visitors:
    thread.join()
print("five visitors; never more than two inside at once:", most <= 2)

# Every object counts its references; the GIL keeps those counts right
# when threads share objects.
shared = object()
before = sys.getrefcount(shared)
alias = shared
print("references:", before, "then", sys.getrefcount(shared))

# A daemon thread never ends, and the process exits anyway.
threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()
print("main returns with a daemon thread still asleep")
