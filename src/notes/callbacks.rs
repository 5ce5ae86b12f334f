//! Step 4: the notes' `selectors` server. One thread, one selector; each
//! registered socket carries its callback (`accept` for the listener,
//! `recv_and_send` for a client), and the loop calls whichever is ready.
//! The notes' own comment is kept, and so is its flaw: `# assume sendall
//! won't block`. The sockets block, so a client that sends and never
//! reads fills its socket's buffers, `sendall` waits for it, and the loop
//! with it: every other client stops. Grows into `serve --mode selector`,
//! which keeps what a client cannot take yet and waits for writability.
//!
//! Rust has no functions stored as data with captured sockets here: the
//! key of each registration indexes a table, and the callback is which
//! table (`LISTENER` or a client's entry).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use polling::{Event, Events, Poller};

use super::{Args, Watched, listen};
use crate::net::Blocking;

/// The listener's key; clients take the keys after it.
const LISTENER: usize = 0;

/// `setup_listening_socket()` then `run_event_loop()`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    // sel = selectors.DefaultSelector()
    let sel = Poller::new()?;
    let listener = listen(&args.addr, Blocking::Yes)?;
    // sel.register(sock, selectors.EVENT_READ, accept)
    let listener = Watched::new(&sel, listener, Event::readable(LISTENER))?;
    let mut clients: HashMap<usize, Watched<'_, TcpStream>> = HashMap::new();
    let mut next_key = LISTENER + 1;
    let mut events = Events::new();
    loop {
        // for key, _ in sel.select():
        events.clear();
        sel.wait(&mut events, None)?;
        for event in events.iter() {
            // callback = key.data; callback(sock)
            if event.key == LISTENER {
                // accept(sock)
                let (client, addr) = listener.source.accept()?;
                eprintln!("Connection from {addr}");
                // sel.register(client_sock, selectors.EVENT_READ, recv_and_send)
                let client = Watched::new(&sel, client, Event::readable(next_key))?;
                clients.insert(next_key, client);
                next_key += 1;
            } else if let Some(client) = clients.get_mut(&event.key) {
                if !recv_and_send(&mut client.source) {
                    // sel.unregister(sock); sock.close()
                    clients.remove(&event.key);
                }
            }
        }
    }
}

/// `recv_and_send(sock)`: whether the client is still there.
fn recv_and_send(sock: &mut TcpStream) -> bool {
    let mut buffer = [0; 4096];
    match sock.read(&mut buffer) {
        Ok(n) if n > 0 => {
            // assume sendall won't block
            sock.write_all(&buffer[..n]).is_ok()
        }
        _ => {
            if let Ok(peer) = sock.peer_addr() {
                eprintln!("Client disconnected: {peer}");
            }
            false
        }
    }
}
