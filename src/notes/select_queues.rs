//! Step 5: the notes' `select()` server with message queues. The loop
//! watches two lists: `read_sockets` (the listener and every client) and
//! `write_sockets` (only the clients that have something queued). What a
//! client sends goes into its queue; the client joins the write list, and
//! leaves it once its queue is empty. That is how a loop waits for
//! writability without spinning: write interest only while there is
//! something to write. Grows into `serve --mode selector`, whose `unsent`
//! buffer is this queue.
//!
//! Where ours differs from the listing: the notes answer `"Echo : " +
//! data`; we echo the bytes, as every echo-lab server does, so that the
//! same tools hold both. And the notes' `sock.send(msg)` drops whatever a
//! short send did not take; we put the rest back at the front of the
//! queue. A list of sockets is a watch interest in Rust: a client is in
//! `write_sockets` when its registration asks for writability.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use polling::{Event, Events, Poller};

use super::{Args, Watched, listen};
use crate::net::Blocking;

/// The listener's key in `read_sockets`.
const SERVER: usize = 0;

/// A client: its socket, and `message_queues[sock]`.
struct Client<'p> {
    sock: Watched<'p, TcpStream>,
    queue: VecDeque<Vec<u8>>,
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
                clients.insert(
                    next_key,
                    Client {
                        sock,
                        queue: VecDeque::new(),
                    },
                );
                next_key += 1;
                continue;
            }
            let Some(client) = clients.get_mut(&event.key) else {
                continue;
            };
            let gone = (event.readable && !client.receive()) || (event.writable && !client.send());
            if gone {
                // delete_socket(sock)
                clients.remove(&event.key);
                continue;
            }
            // `write_sockets`: watched for writing while its queue holds data.
            let interest = match client.queue.is_empty() {
                true => Event::readable(event.key),
                false => Event::all(event.key),
            };
            client.sock.change(interest)?;
        }
    }
}

impl Client<'_> {
    /// The `for sock in readable` branch: `data = recv(sock)`, queued.
    fn receive(&mut self) -> bool {
        let mut data = vec![0; 1 << 10];
        match self.sock.source.read(&mut data) {
            Ok(0) => false,
            Ok(n) => {
                data.truncate(n);
                // message_queues[sock].put(...)
                self.queue.push_back(data);
                true
            }
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }

    /// The `for sock in writable` branch: `get_nowait()`, then `send`.
    fn send(&mut self) -> bool {
        let Some(mut message) = self.queue.pop_front() else {
            return true;
        };
        match self.sock.source.write(&message) {
            Ok(n) if n < message.len() => {
                // A short send: the rest goes first next time.
                message.drain(..n);
                self.queue.push_front(message);
                true
            }
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.queue.push_front(message);
                true
            }
            Err(_) => false,
        }
    }
}
