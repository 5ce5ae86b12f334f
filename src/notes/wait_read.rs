//! Step 7: the notes' generators that say what they wait for. A task
//! yields `('WAIT_READ', sock)` or `('WAIT_WRITE', sock)`; the loop
//! (`io_loop`) registers that socket with its selector and resumes the
//! task only once the socket is ready, so `accept`, `recv` and `sendall` run only when
//! they will not wait (a `sendall` larger than the socket's room still
//! would; the next step fixes that). Grows into `serve --mode
//! statemachine`, which keeps a socket registered for its task's life.
//!
//! The listing's typos are fixed: it registers `EVENT_READ` for
//! `WAIT_WRITE`, tests `if self.tasks_to_run` the wrong way round, and
//! calls `unregister()` without its socket. In Rust the task hands the
//! loop a shared handle to its socket (`Rc`) to watch while it keeps it.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;

use super::io_loop::{Next, Task, run_loop};
use super::{Args, listen};
use crate::net::Blocking;

/// `loop.create_task(run_server()); loop.run()`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let sock = Rc::new(listen(&args.addr, Blocking::Yes)?);
    run_loop(Box::new(Server {
        sock,
        started: false,
    }))
}

/// `run_server()`: `while True: yield 'WAIT_READ', sock; accept(); ...`.
struct Server {
    sock: Rc<TcpListener>,
    started: bool,
}

impl Task for Server {
    fn resume(&mut self, tasks: &mut VecDeque<Box<dyn Task>>) -> Next {
        if self.started {
            // Ready, so this does not wait.
            if let Ok((sock, addr)) = self.sock.accept() {
                eprintln!("Connection from {addr}");
                tasks.push_back(Box::new(Client {
                    sock: Rc::new(sock),
                    state: State::Start,
                }));
            }
        }
        self.started = true;
        Next::WaitRead(self.sock.clone())
    }
}

/// `handle_client(sock)`, stopped at one of its `yield`s.
struct Client {
    sock: Rc<TcpStream>,
    state: State,
}

enum State {
    /// Not started: the first `next()` runs to the first `yield`.
    Start,
    /// At `yield 'WAIT_READ', sock`, before `recv`.
    Reading,
    /// At `yield 'WAIT_WRITE', sock`, before `sendall`.
    Writing(Vec<u8>),
}

impl Task for Client {
    fn resume(&mut self, _: &mut VecDeque<Box<dyn Task>>) -> Next {
        match std::mem::replace(&mut self.state, State::Reading) {
            State::Start => Next::WaitRead(self.sock.clone()),
            State::Reading => {
                // Readable, so this does not wait.
                let mut data = vec![0; 4096];
                match (&*self.sock).read(&mut data) {
                    Ok(n) if n > 0 => {
                        data.truncate(n);
                        self.state = State::Writing(data);
                        Next::WaitWrite(self.sock.clone())
                    }
                    // if not received_data: break
                    _ => Next::Stopped,
                }
            }
            // sock.sendall(received_data); back to `yield 'WAIT_READ', sock`
            State::Writing(data) => match (&*self.sock).write_all(&data) {
                Ok(()) => Next::WaitRead(self.sock.clone()),
                Err(_) => Next::Stopped,
            },
        }
    }
}
