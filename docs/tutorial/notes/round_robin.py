# Step 6, the notes' bare generators on EventLoopNoIO (note 1), runnable:
#   python3 round_robin.py [PORT]
# Fixed from the listing: it imported EventLoopNoIO and defined it too.
# Kept: its flaw. accept() blocks the loop until the next client comes.
import socket
import sys
from collections import deque


class EventLoopNoIO:
    def __init__(self):
        self.tasks_to_run = deque([])

    def create_task(self, coro):
        self.tasks_to_run.append(coro)

    def run(self):
        while self.tasks_to_run:
            task = self.tasks_to_run.popleft()
            try:
                next(task)
            except StopIteration:
                continue
            self.create_task(task)


loop = EventLoopNoIO()


def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        yield
        client_sock, addr = sock.accept()
        loop.create_task(handle_client(client_sock))


def handle_client(sock):
    while True:
        yield
        received_data = sock.recv(4096)
        if not received_data:
            break
        yield
        sock.sendall(received_data)
    sock.close()


if __name__ == '__main__':
    loop.create_task(run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555))
    loop.run()
