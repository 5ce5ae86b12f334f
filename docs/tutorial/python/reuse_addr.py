"""Chapter 1: bind a port that a closed connection still holds, first
without SO_REUSEADDR, then with it. Usage: python3 reuse_addr.py PORT"""
import socket
import sys

port = int(sys.argv[1])
for reuse in (False, True):
    sock = socket.socket()
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    name = "on" if reuse else "off"
    try:
        sock.bind(("127.0.0.1", port))
        print(f"SO_REUSEADDR {name}: bound")
    except OSError as e:
        print(f"SO_REUSEADDR {name}: {e.strerror}")
    sock.close()
