# Step 10, the chat on a thread per client with one lock, runnable:
#   python3 chat_threads.py [PORT]
# Commands, one per line: register,NAME  list  chat,NAME,TEXT  chat,*,TEXT  quit
import socket
import sys
import threading

names = {}
lock = threading.Lock()


def serve(sock):
    name = None
    for line in sock.makefile('r', encoding='utf-8', newline='\n'):
        command = line.rstrip('\n').split(',', 2)
        with lock:
            if command[0] == 'register' and len(command) == 2 and name is None \
                    and command[1] and '*' not in command[1]:
                if command[1] in names:
                    reply = 'error,name taken'
                else:
                    name = command[1]
                    names[name] = sock
                    reply = 'ok'
            elif command == ['list']:
                reply = ','.join(sorted(names))
            elif command[0] == 'chat' and len(command) == 3:
                if name is None:
                    reply = 'error,register first'
                else:
                    to = [s for n, s in names.items()
                          if n == command[1] or (command[1] == '*' and n != name)]
                    for peer in to:
                        peer.sendall(('from,%s,%s\n' % (name, command[2])).encode())
                    reply = None if to else 'error,no such user'
            elif command == ['quit']:
                break
            else:
                reply = 'error,unknown command'
        if reply is not None:
            sock.sendall((reply + '\n').encode())
    with lock:
        names.pop(name, None)
    sock.close()


def run_server(host='127.0.0.1', port=55555):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    print('listening on %s:%d' % sock.getsockname(), flush=True)
    while True:
        client_sock, _ = sock.accept()
        threading.Thread(target=serve, args=(client_sock,), daemon=True).start()


if __name__ == '__main__':
    run_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555)
