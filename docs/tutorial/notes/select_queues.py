# Step 5, the notes' select() server with message queues (note 3), runnable:
#   python3 select_queues.py [PORT]
# Changed from the listing, as the Rust step is: it echoes the bytes (the
# notes answer "Echo : " + data), and a short send puts the rest back at
# the front of the queue (the notes drop it), and a client that stops
# sending still gets its queued echoes before the close.
import queue
import select
import socket
import sys

HOST = "127.0.0.1"
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 55555
BUFFER_SIZE = 1 << 10

server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server_socket.bind((HOST, PORT))
server_socket.listen(5)
print('listening on %s:%d' % server_socket.getsockname(), flush=True)

read_sockets = [server_socket]
write_sockets = []
message_queues = {}


def delete_socket(sock):
    if sock in read_sockets:
        read_sockets.remove(sock)
    if sock in write_sockets:
        write_sockets.remove(sock)
    sock.close()
    del message_queues[sock]


while True:
    readable, writable, _ = select.select(read_sockets, write_sockets, [])
    for sock in readable:
        if sock is server_socket:
            client_socket, _ = server_socket.accept()
            client_socket.setblocking(False)
            read_sockets.append(client_socket)
            message_queues[client_socket] = queue.Queue()
            continue
        try:
            data = sock.recv(BUFFER_SIZE)
        except BlockingIOError:
            continue
        except ConnectionError:
            data = b''
        if data:
            message_queues[sock].put(data)
            if sock not in write_sockets:
                write_sockets.append(sock)
        elif message_queues[sock].empty():
            delete_socket(sock)
        else:
            # The client is done sending (or half-closed): its queued
            # echoes still go before the close (the notes close at once).
            read_sockets.remove(sock)
    for sock in writable:
        if sock not in message_queues:
            continue
        try:
            next_message = message_queues[sock].get_nowait()
        except queue.Empty:
            write_sockets.remove(sock)
            if sock not in read_sockets:
                delete_socket(sock)
        else:
            try:
                sent = sock.send(next_message)
            except BlockingIOError:
                sent = 0
            except ConnectionError:
                delete_socket(sock)
                continue
            if sent < len(next_message):
                rest = queue.Queue()
                rest.put(next_message[sent:])
                while not message_queues[sock].empty():
                    rest.put(message_queues[sock].get_nowait())
                message_queues[sock] = rest
