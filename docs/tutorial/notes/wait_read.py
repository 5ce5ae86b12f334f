# Step 7, generators yielding ('WAIT_READ', sock) to a selector loop
# (note 1), runnable:   python3 wait_read.py [PORT]
# Fixed from the listing: WAIT_WRITE registers EVENT_WRITE (the listing
# registers EVENT_READ), the loop runs tasks while there are some (the
# listing's test is the wrong way round), and unregister() names its socket.
import selectors
import socket
import sys
from collections import deque


class EventLoop:
    def __init__(self):
        self.tasks_to_run = deque([])
        self.sel = selectors.DefaultSelector()

    def create_task(self, coro):
        self.tasks_to_run.append(coro)

    def run(self):
        while True:
            if self.tasks_to_run:
                task = self.tasks_to_run.popleft()
                try:
                    # next(task) in the notes; send(None) is the same for
                    # a generator, and works for a native coroutine too.
                    op, arg = task.send(None)
                except StopIteration:
                    continue
                if op == 'WAIT_READ':
                    self.sel.register(arg, selectors.EVENT_READ, task)
                elif op == 'WAIT_WRITE':
                    self.sel.register(arg, selectors.EVENT_WRITE, task)
                else:
                    raise ValueError('unknown event loop operation:', op)
            else:
                for key, _ in self.sel.select():
                    self.sel.unregister(key.fileobj)
                    self.create_task(key.data)


loop = EventLoop()


def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        yield 'WAIT_READ', sock
        client_sock, addr = sock.accept()
        loop.create_task(handle_client(client_sock))


def handle_client(sock):
    while True:
        yield 'WAIT_READ', sock
        try:
            received_data = sock.recv(4096)
        except ConnectionError:
            break
        if not received_data:
            break
        yield 'WAIT_WRITE', sock
        sock.sendall(received_data)
    sock.close()


if __name__ == '__main__':
    loop.create_task(run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555))
    loop.run()
