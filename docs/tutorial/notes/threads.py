# Step 2, a thread per client (note 1, "OS threads"), runnable:
#   python3 threads.py [PORT]
import socket
import sys
import threading

from sequential import handle_client


def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        client_sock, addr = sock.accept()
        threading.Thread(target=handle_client, args=(client_sock,), daemon=True).start()


if __name__ == '__main__':
    run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555)
