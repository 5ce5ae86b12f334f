//! Step 1: the notes' first server. One client at a time: accept, echo
//! until it leaves, accept the next. Everyone else waits in the kernel's
//! backlog. Grows into `serve --mode sequential`, which adds a stop that
//! wakes the waits, an idle timeout, counts, and partial writes said out
//! loud.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::{Args, listen};
use crate::net::Blocking;

/// `run_server()`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    // sock.bind((host, port)); sock.listen()
    let listener = listen(&args.addr, Blocking::Yes)?;
    loop {
        // client_sock, addr = sock.accept()
        let (client, addr) = listener.accept()?;
        eprintln!("Connection from {addr}");
        // handle_client(client_sock)
        handle_client(client);
    }
}

/// `handle_client(sock)`. An error (the client reset) ends this client,
/// as an exception would end the Python function; the server goes on.
pub fn handle_client(mut sock: TcpStream) {
    let peer = sock.peer_addr();
    let mut buffer = [0; 4096];
    loop {
        // received_data = sock.recv(4096); if not received_data: break
        let n = match sock.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // sock.sendall(received_data): write_all loops over partial writes
        if sock.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    // print('Client disconnected:', sock.getpeername()); sock.close()
    if let Ok(peer) = peer {
        eprintln!("Client disconnected: {peer}");
    }
}
