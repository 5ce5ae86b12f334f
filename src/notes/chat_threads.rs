//! Step 10: the chat on a thread per client, with one lock. Each client
//! registers a name (`register,NAME`), asks for the names (`list`), and
//! sends a line to one name or to everyone else (`chat,NAME,TEXT`,
//! `chat,*,TEXT`); `quit` leaves. The registry of names is shared by every
//! thread, so it lives behind one `Mutex`: a thread takes the lock to look
//! a name up and write to its socket. Grows into `serve --protocol chat
//! --mode threads`, which bounds what a slow receiver may owe, writes
//! from a thread of its own per client, and checks the lock order.
//!
//! Where Rust differs: the compiler refuses to share the map between
//! threads without the lock (`Arc<Mutex<...>>`); with it, the check and
//! the insert of `register` happen under one lock, so two clients cannot
//! both take a name. (Python's GIL does not make that check-then-insert
//! atomic; the lab's `--racy-register` shows the race.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};

use super::chat::{Reply, command};
use super::{Args, listen};
use crate::net::Blocking;

/// Every registered name, and a handle on its socket to write to.
type Registry = Arc<Mutex<BTreeMap<String, TcpStream>>>;

/// Accepts clients, a thread each.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let listener = listen(&args.addr, Blocking::Yes)?;
    let registry = Registry::default();
    loop {
        let (client, _) = listener.accept()?;
        let registry = registry.clone();
        std::thread::spawn(move || serve(client, &registry));
    }
}

/// One client's commands, line by line, until `quit` or it leaves.
fn serve(mut sock: TcpStream, registry: &Registry) {
    let Ok(reader) = sock.try_clone() else { return };
    let mut name = None;
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        // with lock:
        let mut names = registry.lock().unwrap_or_else(PoisonError::into_inner);
        let me = || sock.try_clone().ok();
        // peer.sendall(...), the lock held
        let send = |peer: &mut TcpStream, line: &str| drop(peer.write_all(line.as_bytes()));
        let reply = match command(&line, &mut name, &mut names, me, send) {
            Reply::Line(reply) => reply,
            Reply::Nothing => continue,
            Reply::Quit => break,
        };
        drop(names);
        if sock.write_all(format!("{reply}\n").as_bytes()).is_err() {
            break;
        }
    }
    if let Some(name) = name {
        registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
    }
}
