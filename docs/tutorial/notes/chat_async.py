# Step 11, the chat on asyncio (note 2, "Async chat server"), runnable:
#   python3 chat_async.py [PORT]
# Commands, one per line: register,NAME  list  chat,NAME,TEXT  chat,*,TEXT  quit
# One thread, no lock: no await falls between a check and its change.
# writer.write() only appends to the transport's buffer, which nothing
# bounds here (as in the notes).
import asyncio
import sys


class ChatServer:
    def __init__(self):
        self.clients = {}

    async def run_server(self, reader, writer):
        name = None
        while True:
            try:
                line = await reader.readline()
            except ConnectionError:
                break
            if not line.endswith(b'\n'):
                break
            command = line.decode('utf-8', 'replace').rstrip('\n').split(',', 2)
            if command[0] == 'register' and len(command) == 2 and name is None \
                    and command[1] and '*' not in command[1]:
                if command[1] in self.clients:
                    reply = 'error,name taken'
                else:
                    name = command[1]
                    self.clients[name] = writer
                    reply = 'ok'
            elif command == ['list']:
                reply = ','.join(sorted(self.clients))
            elif command[0] == 'chat' and len(command) == 3:
                if name is None:
                    reply = 'error,register first'
                else:
                    to = [w for n, w in self.clients.items()
                          if n == command[1] or (command[1] == '*' and n != name)]
                    for peer in to:
                        peer.write(('from,%s,%s\n' % (name, command[2])).encode())
                    reply = None if to else 'error,no such user'
            elif command == ['quit']:
                break
            else:
                reply = 'error,unknown command'
            if reply is not None:
                writer.write((reply + '\n').encode())
        self.clients.pop(name, None)
        writer.close()


async def main(host='127.0.0.1', port=55555):
    chat_server = ChatServer()
    server = await asyncio.start_server(chat_server.run_server, host, port)
    print('listening on %s:%d' % server.sockets[0].getsockname()[:2], flush=True)
    await server.serve_forever()


if __name__ == '__main__':
    asyncio.run(main(port=int(sys.argv[1]) if len(sys.argv) > 1 else 55555))
