# Step 3, the notes' thread pool, ThreadPoolExecutor(max_workers=20),
# runnable:   python3 pool.py [PORT [WORKERS]]
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

from sequential import handle_client

pool = ThreadPoolExecutor(max_workers=int(sys.argv[2]) if len(sys.argv) > 2 else 20)


def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        client_sock, addr = sock.accept()
        pool.submit(handle_client, client_sock)


if __name__ == '__main__':
    run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555)
