# Step 4, the notes' selectors server (note 1), runnable:
#   python3 callbacks.py [PORT]
# Fixed from the listing: `selector.DefaultSelector()` is
# `selectors.DefaultSelector()`. Kept: "assume sendall won't block".
import selectors
import socket
import sys

sel = selectors.DefaultSelector()


def setup_listening_socket(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    sel.register(sock, selectors.EVENT_READ, accept)


def accept(sock):
    client_sock, addr = sock.accept()
    sel.register(client_sock, selectors.EVENT_READ, recv_and_send)


def recv_and_send(sock):
    try:
        received_data = sock.recv(4096)
        if received_data:
            # assume sendall won't block
            sock.sendall(received_data)
            return
    except ConnectionError:
        # A client that reset: closed, not a crash of the whole server.
        pass
    sel.unregister(sock)
    sock.close()


def run_event_loop():
    while True:
        for key, _ in sel.select():
            callback = key.data
            sock = key.fileobj
            callback(sock)


if __name__ == '__main__':
    setup_listening_socket(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555)
    run_event_loop()
