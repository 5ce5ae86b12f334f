# Step 8, sub-generators with `yield from` (note 1), runnable:
#   python3 yield_from.py [PORT]
# Fixed from the listing, besides the loop's typos (see wait_read.py): the
# sub-generators return what they got (the listing's drop it), and
# sock_sendall sends what the socket takes and waits again until all is sent.
import selectors
import socket
import sys

from wait_read import EventLoop


class Loop(EventLoop):
    def sock_accept(self, sock):
        yield 'WAIT_READ', sock
        return sock.accept()

    def sock_recv(self, sock, n):
        yield 'WAIT_READ', sock
        return sock.recv(n)

    def sock_sendall(self, sock, data):
        while data:
            yield 'WAIT_WRITE', sock
            data = data[sock.send(data):]


loop = Loop()


def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        client_sock, addr = yield from loop.sock_accept(sock)
        client_sock.setblocking(False)
        loop.create_task(handle_client(client_sock))


def handle_client(sock):
    while True:
        try:
            received_data = yield from loop.sock_recv(sock, 4096)
        except ConnectionError:
            break
        if not received_data:
            break
        yield from loop.sock_sendall(sock, received_data)
    sock.close()


if __name__ == '__main__':
    loop.create_task(run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555))
    loop.run()
