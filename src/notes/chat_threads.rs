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
        let mut names = registry.lock().unwrap_or_else(PoisonError::into_inner);
        let reply = match line.splitn(3, ',').collect::<Vec<_>>()[..] {
            ["register", wanted]
                if name.is_none() && !wanted.is_empty() && !wanted.contains('*') =>
            {
                match names.contains_key(wanted) {
                    true => "error,name taken".to_owned(),
                    false => match sock.try_clone() {
                        Ok(handle) => {
                            names.insert(wanted.to_owned(), handle);
                            name = Some(wanted.to_owned());
                            "ok".to_owned()
                        }
                        Err(_) => break,
                    },
                }
            }
            ["list"] => names.keys().cloned().collect::<Vec<_>>().join(","),
            ["chat", to, text] => match &name {
                None => "error,register first".to_owned(),
                Some(from) => {
                    let line = format!("from,{from},{text}\n");
                    let sent: Vec<_> = names
                        .iter_mut()
                        .filter(|(n, _)| (to == "*" && *n != from) || n.as_str() == to)
                        .map(|(_, peer)| peer.write_all(line.as_bytes()))
                        .collect();
                    if sent.is_empty() {
                        "error,no such user".to_owned()
                    } else {
                        continue;
                    }
                }
            },
            ["quit"] => break,
            _ => "error,unknown command".to_owned(),
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
