//! Step 2: a thread per client, the notes' "OS threads" before the pool.
//! The accept loop goes straight back to `accept()`, so every client is
//! served at once, each by a thread of its own, as many as come. Grows into
//! `serve --mode threads`, which gives each thread a small stack, bounds
//! the clients, and wakes every thread on a stop.
//!
//! Rust differs in one word: `move`. The thread takes the socket with it,
//! and the compiler checks that nothing else still uses it.

use super::sequential::handle_client;
use super::{Args, listen};
use crate::net::Blocking;

/// `run_server()`, with `threading.Thread(target=handle_client, args=(client_sock,)).start()`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let listener = listen(&args.addr, Blocking::Yes)?;
    loop {
        let (client, addr) = listener.accept()?;
        eprintln!("Connection from {addr}");
        std::thread::spawn(move || handle_client(client));
    }
}
