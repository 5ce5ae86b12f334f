//! Step 6: the notes' first coroutines, bare generators on `EventLoopNoIO`.
//! Every task yields after each step and the loop runs the next one in
//! turn, round robin, knowing nothing about sockets. The flaw the notes
//! name is kept, and runnable: the sockets block, and the server's task
//! blocks in `accept()`, so every client's next step waits until another
//! client connects. One client alone is never echoed; the tests connect
//! two more and watch its echo come. Grows into `wait-read`, which asks a
//! selector before resuming anyone, and then into `serve --mode
//! statemachine`.
//!
//! Rust has no stable generators: a generator is written as the state
//! machine the Python compiler makes of one. Each `resume` is one `next()`,
//! running from one `yield` to the next; the state says where it stopped.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use super::{Args, listen};
use crate::net::Blocking;

/// What `next(task)` gives the loop.
enum Next {
    /// `yield`: run me again in turn.
    Yielded,
    /// `StopIteration`: I am done.
    Stopped,
}

/// A generator, as the loop sees it.
trait Task {
    /// `next(task)`; `tasks` is the loop's queue, for `loop.create_task`.
    fn resume(&mut self, tasks: &mut VecDeque<Box<dyn Task>>) -> Next;
}

/// `EventLoopNoIO().run()`: pop a task, `next()` it, put it back unless
/// it stopped.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let listener = listen(&args.addr, Blocking::Yes)?;
    let mut tasks: VecDeque<Box<dyn Task>> = VecDeque::new();
    tasks.push_back(Box::new(Server {
        sock: listener,
        started: false,
    }));
    while let Some(mut task) = tasks.pop_front() {
        if let Next::Yielded = task.resume(&mut tasks) {
            tasks.push_back(task);
        }
    }
    Ok(())
}

/// `run_server()`: `while True: yield; accept(); loop.create_task(...)`.
struct Server {
    sock: TcpListener,
    /// Past its first `yield`.
    started: bool,
}

impl Task for Server {
    fn resume(&mut self, tasks: &mut VecDeque<Box<dyn Task>>) -> Next {
        if self.started {
            // client_sock, addr = sock.accept(): blocks the whole loop.
            if let Ok((sock, addr)) = self.sock.accept() {
                eprintln!("Connection from {addr}");
                tasks.push_back(Box::new(Client {
                    sock,
                    state: State::Start,
                }));
            }
        }
        self.started = true;
        Next::Yielded
    }
}

/// `handle_client(sock)`, stopped at one of its `yield`s.
struct Client {
    sock: TcpStream,
    state: State,
}

enum State {
    /// Not started: the first `next()` runs to the first `yield`.
    Start,
    /// At the `yield` before `recv`.
    BeforeRecv,
    /// At the `yield` before `sendall`, with what it received.
    BeforeSend(Vec<u8>),
}

impl Task for Client {
    fn resume(&mut self, _: &mut VecDeque<Box<dyn Task>>) -> Next {
        match std::mem::replace(&mut self.state, State::BeforeRecv) {
            State::Start => Next::Yielded,
            State::BeforeRecv => {
                let mut data = vec![0; 4096];
                match self.sock.read(&mut data) {
                    Ok(n) if n > 0 => {
                        data.truncate(n);
                        self.state = State::BeforeSend(data);
                        Next::Yielded
                    }
                    // if not received_data: break
                    _ => Next::Stopped,
                }
            }
            // sock.sendall(received_data), then back to the top: yield.
            State::BeforeSend(data) => match self.sock.write_all(&data) {
                Ok(()) => Next::Yielded,
                Err(_) => Next::Stopped,
            },
        }
    }
}
