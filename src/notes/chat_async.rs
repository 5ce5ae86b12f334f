//! Step 11: the chat on the async step's loop, the notes' asyncio chat:
//! one thread, no lock. The registry is plain data one task touches at a
//! time, as in asyncio, where no `await` falls between a check and its
//! change. A sender appends a line to the receiver's outbox and wakes its
//! writer task, as asyncio's `writer.write(data)` appends to a buffer that
//! nothing bounds (nor here). Grows into `serve --protocol chat --mode
//! async`, which bounds it. Where Rust differs: the writer has a descriptor
//! of its own (`try_clone`): the step's loop watches one per task.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::async_await::{Loop, new_loop};
use super::chat::{Reply, command};
use super::{Args, listen};
use crate::net::Blocking;

/// What a client is owed, and its writer task's waker while it waits.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    waiting: Option<Waker>,
    /// The client left: the writer sends what is owed, then ends.
    closed: bool,
}

/// A client's outbox, shared by its tasks and its senders.
type Shared = Rc<RefCell<Outbox>>;

/// `self.clients`: every name's outbox. No lock: no `await` while borrowed.
type Registry = Rc<RefCell<BTreeMap<String, Shared>>>;

/// `await asyncio.start_server(chat_server.run_server, host, port)`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let sock = Rc::new(listen(&args.addr, Blocking::No)?);
    let lp = new_loop()?;
    lp.create_task(accept_clients(lp, sock, Registry::default()));
    Ok(lp.run()?)
}

/// Starts the reading task and the writing task of each client.
async fn accept_clients(lp: &'static Loop, sock: Rc<TcpListener>, names: Registry) {
    loop {
        let Ok(client) = lp.sock_accept(&sock).await else {
            continue;
        };
        let (Ok(()), Ok(writer)) = (client.set_nonblocking(true), client.try_clone()) else {
            continue;
        };
        let outbox = Rc::new(RefCell::new(Outbox::default()));
        lp.create_task(write_out(lp, Rc::new(writer), outbox.clone()));
        lp.create_task(run_server(lp, Rc::new(client), names.clone(), outbox));
    }
}

/// `writer.write(line)`, and wake its writer; `None` closes it.
fn post(outbox: &RefCell<Outbox>, line: Option<&str>) {
    let mut outbox = outbox.borrow_mut();
    match line {
        Some(line) => outbox.bytes.extend_from_slice(line.as_bytes()),
        None => outbox.closed = true,
    }
    if let Some(waker) = outbox.waiting.take() {
        waker.wake();
    }
}

/// `await writer.drain()`, forever: sends what the client is owed.
async fn write_out(lp: &'static Loop, sock: Rc<TcpStream>, outbox: Shared) {
    loop {
        let owed = poll_fn(|cx| {
            let mut outbox = outbox.borrow_mut();
            if outbox.bytes.is_empty() && !outbox.closed {
                outbox.waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready((std::mem::take(&mut outbox.bytes), outbox.closed))
        })
        .await;
        if lp.sock_sendall(&sock, &owed.0).await.is_err() || owed.1 {
            return;
        }
    }
}

/// `async def run_server(reader, writer)`: one client's commands.
async fn run_server(lp: &'static Loop, sock: Rc<TcpStream>, names: Registry, me: Shared) {
    let (mut name, mut pending) = (None, Vec::new());
    // line = await reader.readline()
    'client: while let Ok(data) = lp.sock_recv(&sock, 4096).await {
        if data.is_empty() {
            break;
        }
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let mut names = names.borrow_mut();
            let send = |peer: &mut Shared, line: &str| post(peer, Some(line));
            match command(&line, &mut name, &mut names, || Some(me.clone()), send) {
                Reply::Line(reply) => post(&me, Some(&format!("{reply}\n"))),
                Reply::Nothing => {}
                Reply::Quit => break 'client,
            }
        }
    }
    // del self.clients[user]
    if let Some(name) = name {
        names.borrow_mut().remove(&name);
    }
    post(&me, None);
}
