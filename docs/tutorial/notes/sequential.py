# Step 1, the notes' sequential server (note 1), runnable:
#   python3 sequential.py [PORT]      (0 picks a free port)
# It prints where it listens, as every echo-lab server does; the rest is
# the notes' listing.
import socket
import sys


def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        client_sock, addr = sock.accept()
        print('Connection from', addr, file=sys.stderr)
        handle_client(client_sock)


def handle_client(sock):
    while True:
        try:
            received_data = sock.recv(4096)
        except ConnectionError:
            break
        if not received_data:
            break
        sock.sendall(received_data)
    sock.close()


if __name__ == '__main__':
    run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555)
