"""Chapter 3: a non-blocking socket with nothing to read; select()'s three
lists, before and after the other end writes; the selector Python picks
on this OS."""
import select
import selectors
import socket

ours, theirs = socket.socketpair()
ours.setblocking(False)
try:
    ours.recv(4096)
except BlockingIOError as e:
    print("recv with nothing to read, non-blocking:", type(e).__name__)
watched = [ours]
readable, writable, exceptional = select.select(watched, watched, watched, 0)
print("before they write: readable", len(readable), "writable", len(writable),
      "exceptional", len(exceptional))
theirs.send(b"hi")
readable, writable, exceptional = select.select(watched, watched, watched, 5)
print("after they write: readable", len(readable), "writable", len(writable),
      "exceptional", len(exceptional))
print("DefaultSelector here:", selectors.DefaultSelector.__name__)
