//! Step 8: the notes' `yield from`. The waits move into sub-generators
//! (`loop.sock_accept`, `sock_recv`, `sock_sendall`) that yield to the loop
//! and *return* a value to the task that delegated to them, so the tasks
//! read as the blocking server did; the loop is step 7's. Grows into
//! `serve --mode statemachine` (and `async`, where `await` is `yield from`).
//!
//! In Rust a sub-generator is a closure run to its next yield or its
//! return, and `yield from` is its caller passing the yields up. Our
//! `sock_sendall` waits for writability until every byte is gone.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::rc::Rc;

use super::io_loop::{Next, Task, run_loop};
use super::{Args, listen};
use crate::net::Blocking;

/// A sub-generator: each call runs it to its next `yield` (`Err(wait)`,
/// for the loop) or to its `return` (`Ok(value)`).
type Sub<T> = Box<dyn FnMut() -> Result<io::Result<T>, Next>>;

/// `value = yield from sub`: pass its yields up; go on with its value.
macro_rules! yield_from {
    ($sub:expr) => {
        match ($sub)() {
            Err(wait) => return wait,
            Ok(value) => value,
        }
    };
}

/// `yield 'WAIT_READ', sock`, then `op` (again after another wait, if the
/// socket was not ready after all).
fn after_read<T>(sock: Rc<dyn AsFd>, mut op: impl FnMut() -> io::Result<T> + 'static) -> Sub<T> {
    let mut waited = false;
    Box::new(move || {
        if !std::mem::replace(&mut waited, true) {
            return Err(Next::WaitRead(sock.clone()));
        }
        match op() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(Next::WaitRead(sock.clone())),
            done => Ok(done),
        }
    })
}

/// `loop.sock_accept(sock)`.
fn sock_accept(sock: &Rc<TcpListener>) -> Sub<TcpStream> {
    let listener = sock.clone();
    after_read(sock.clone(), move || listener.accept().map(|(s, _)| s))
}

/// `loop.sock_recv(sock, 4096)`.
fn sock_recv(sock: &Rc<TcpStream>) -> Sub<Vec<u8>> {
    let stream = sock.clone();
    after_read(sock.clone(), move || {
        let mut data = vec![0; 4096];
        (&*stream).read(&mut data).map(|n| data[..n].to_vec())
    })
}

/// `loop.sock_sendall(sock, data)`: write what the socket takes, wait for
/// writability, until all is written.
fn sock_sendall(sock: &Rc<TcpStream>, data: Vec<u8>) -> Sub<()> {
    let (sock, mut sent) = (sock.clone(), 0);
    Box::new(move || {
        while sent < data.len() {
            match (&*sock).write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(Next::WaitWrite(sock.clone()));
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(()))
    })
}

/// `loop.create_task(run_server()); loop.run()`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let sock = Rc::new(listen(&args.addr, Blocking::No)?);
    run_loop(Box::new(run_server(sock)))
}

/// `run_server()`: `client_sock, addr = yield from loop.sock_accept(sock)`.
fn run_server(sock: Rc<TcpListener>) -> impl Task {
    let mut accept = sock_accept(&sock);
    move |tasks: &mut VecDeque<Box<dyn Task>>| loop {
        let accepted = yield_from!(accept);
        if let Ok(client) = accepted.and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            tasks.push_back(Box::new(handle_client(Rc::new(client))));
        }
        // The next turn of `while True`.
        accept = sock_accept(&sock);
    }
}

/// `handle_client(sock)`: receiving, or (with `send`) sending it back.
fn handle_client(sock: Rc<TcpStream>) -> impl Task {
    let (mut recv, mut send) = (sock_recv(&sock), None::<Sub<()>>);
    move |_: &mut VecDeque<Box<dyn Task>>| loop {
        if let Some(sending) = &mut send {
            // yield from loop.sock_sendall(sock, received_data)
            if yield_from!(sending).is_err() {
                return Next::Stopped;
            }
            (send, recv) = (None, sock_recv(&sock));
        }
        // received_data = yield from loop.sock_recv(sock, 4096)
        match yield_from!(recv) {
            Ok(data) if !data.is_empty() => send = Some(sock_sendall(&sock, data)),
            // if not received_data: break (or the client reset)
            _ => return Next::Stopped,
        }
    }
}
