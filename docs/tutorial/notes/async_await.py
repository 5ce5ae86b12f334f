# Step 9, async def on a loop of their own (note 1, "async/await"),
# runnable:   python3 async_await.py [PORT]
# The waits are generator-based coroutines (@types.coroutine), awaited by
# native coroutines; the loop is step 7's, whose send(None) runs both.
import socket
import sys
import types

from wait_read import EventLoop


class Loop(EventLoop):
    @types.coroutine
    def sock_accept(self, sock):
        yield 'WAIT_READ', sock
        return sock.accept()

    @types.coroutine
    def sock_recv(self, sock, n):
        yield 'WAIT_READ', sock
        return sock.recv(n)

    @types.coroutine
    def sock_sendall(self, sock, data):
        while data:
            yield 'WAIT_WRITE', sock
            data = data[sock.send(data):]


loop = Loop()


async def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        client_sock, addr = await loop.sock_accept(sock)
        client_sock.setblocking(False)
        loop.create_task(handle_client(client_sock))


async def handle_client(sock):
    while True:
        try:
            received_data = await loop.sock_recv(sock, 4096)
        except ConnectionError:
            break
        if not received_data:
            break
        await loop.sock_sendall(sock, received_data)
    sock.close()


if __name__ == '__main__':
    loop.create_task(run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555))
    loop.run()
