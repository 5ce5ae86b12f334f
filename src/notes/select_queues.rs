//! Step 5: the notes' `select()` server with message queues. The loop
//! watches `read_sockets` (the listener, every client) and `write_sockets`
//! (the clients with something queued): a client joins the write list when
//! its queue fills and leaves it when it empties, so the loop waits for
//! writability only while it has something to write. In Rust a list is a
//! registration's interest. Grows into `serve --mode selector`, whose
//! `unsent` buffer is this queue.
//!
//! Where ours differs from the listing: we echo the bytes (the notes
//! answer `"Echo : " + data`), so that the same tools hold both; a short
//! send puts the rest back at the front of the queue (the notes drop it);
//! and a client that stops sending gets its queued echoes before the close.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use polling::{Event, Events, Poller};

use super::{Args, Watched, listen};
use crate::net::Blocking;

/// The listener's key in `read_sockets`.
const SERVER: usize = 0;

/// A client: its socket, `message_queues[sock]`, and whether it stopped
/// sending (out of `read_sockets`, its queue still to go).
struct Client<'p> {
    sock: Watched<'p, TcpStream>,
    queue: VecDeque<Vec<u8>>,
    done_sending: bool,
}

/// The notes' `while True:` loop around `select.select(read_sockets, write_sockets, [])`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let poller = Poller::new()?;
    let server = listen(&args.addr, Blocking::No)?;
    let server = Watched::new(&poller, server, Event::readable(SERVER))?;
    let mut clients: HashMap<usize, Client<'_>> = HashMap::new();
    let mut next_key = SERVER + 1;
    let mut events = Events::new();
    loop {
        // readable, writable, _ = select.select(read_sockets, write_sockets, [])
        events.clear();
        poller.wait(&mut events, None)?;
        for event in events.iter() {
            if event.key == SERVER {
                // accept(): read_sockets.append(...); message_queues[...] = queue.Queue()
                let Ok((sock, _)) = server.source.accept() else {
                    continue;
                };
                sock.set_nonblocking(true)?;
                let sock = Watched::new(&poller, sock, Event::readable(next_key))?;
                let queue = VecDeque::new();
                let client = Client {
                    sock,
                    queue,
                    done_sending: false,
                };
                clients.insert(next_key, client);
                next_key += 1;
                continue;
            }
            let Some(client) = clients.get_mut(&event.key) else {
                continue;
            };
            let failed =
                (event.readable && !client.receive()) || (event.writable && !client.send());
            if failed || (client.done_sending && client.queue.is_empty()) {
                // delete_socket(sock)
                clients.remove(&event.key);
                continue;
            }
            // In `read_sockets` until it stops sending; in `write_sockets`
            // while its queue holds data.
            let mut interest = Event::none(event.key);
            interest.readable = !client.done_sending;
            interest.writable = !client.queue.is_empty();
            client.sock.change(interest)?;
        }
    }
}

impl Client<'_> {
    /// `for sock in readable`: `data = recv(sock)`, queued.
    fn receive(&mut self) -> bool {
        let mut data = vec![0; 1 << 10];
        match self.sock.source.read(&mut data) {
            // Done sending: its echoes still go before the close.
            Ok(0) => {
                self.done_sending = true;
                true
            }
            Ok(n) => {
                data.truncate(n);
                // message_queues[sock].put(...)
                self.queue.push_back(data);
                true
            }
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }

    /// `for sock in writable`: `get_nowait()`, `send`, the rest kept.
    fn send(&mut self) -> bool {
        let Some(mut message) = self.queue.pop_front() else {
            return true;
        };
        let sent = match self.sock.source.write(&message) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => return false,
        };
        message.drain(..sent);
        if !message.is_empty() {
            self.queue.push_front(message);
        }
        true
    }
}
