//! Step 9: the notes' `async def` on a loop of their own. The handlers are
//! the blocking server's, with `await` at each wait; under them, the
//! smallest executor and reactor that work: a queue of tasks ready to run,
//! a waker that puts a task back on it, and one poller that says which
//! sockets are ready. Grows into `serve --mode async`, whose runtime adds
//! a cooperative budget, timers, wakers that allocate nothing, and
//! registrations kept for a socket's life.
//!
//! Where Rust differs: an `async fn` is a state machine the compiler
//! writes (the previous step, written by hand), and nothing runs it until
//! an executor polls it; a poll that cannot finish returns `Pending`
//! after leaving a `Waker` with whoever will know when to try again (the
//! notes' `future.add_done_callback`). A future that holds a reference
//! into itself must not move once polled: hence `Pin<Box<...>>`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use polling::{Event, Events, Poller};

use super::{Args, Watched, listen};
use crate::net::Blocking;

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// The loop: the executor's tasks and ready queue, the reactor's poller.
/// It lives as long as the program (leaked once), so that a registration
/// can borrow its poller from inside a task.
pub struct Loop {
    poller: Poller,
    /// Ids of the tasks to poll; wakers push onto it.
    ready: Arc<Mutex<VecDeque<usize>>>,
    /// Tasks made by `create_task` since the last turn.
    spawned: RefCell<Vec<Task>>,
    /// The task waiting on each registration, by key.
    wakers: RefCell<HashMap<usize, Waker>>,
    /// Registrations the poller reported ready, not yet seen by their future.
    fired: RefCell<HashSet<usize>>,
    next_key: Cell<usize>,
}

/// A waker: "put task `id` back on the ready queue".
struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.push_back(self.id);
    }
}

impl Loop {
    /// `loop.create_task(coro)`.
    pub fn create_task(&self, task: impl Future<Output = ()> + 'static) {
        self.spawned.borrow_mut().push(Box::pin(task));
    }

    /// `loop.run_forever()`: poll every ready task; when none is ready,
    /// wait for the poller and wake the tasks whose sockets are ready.
    pub fn run(&'static self) -> io::Result<()> {
        let mut tasks: HashMap<usize, Task> = HashMap::new();
        let mut next_id = 0;
        let mut events = Events::new();
        loop {
            for task in self.spawned.borrow_mut().drain(..) {
                tasks.insert(next_id, task);
                self.ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(next_id);
                next_id += 1;
            }
            let next = self
                .ready
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if let Some(id) = next {
                let Some(task) = tasks.get_mut(&id) else {
                    continue;
                };
                // `task.__step()`: `coro.send(None)`.
                let waker = Waker::from(Arc::new(TaskWaker {
                    id,
                    ready: self.ready.clone(),
                }));
                if task
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
                {
                    tasks.remove(&id);
                }
                continue;
            }
            if !self.spawned.borrow().is_empty() {
                continue;
            }
            events.clear();
            self.poller.wait(&mut events, None)?;
            for event in events.iter() {
                self.fired.borrow_mut().insert(event.key);
                if let Some(waker) = self.wakers.borrow_mut().remove(&event.key) {
                    waker.wake();
                }
            }
        }
    }

    /// Waits until `sock` is ready for `interest` (`Event::readable` or
    /// `Event::writable`): asyncio's `add_reader`, as a future.
    async fn ready<S: AsFd>(
        &'static self,
        sock: S,
        interest: fn(usize) -> Event,
    ) -> io::Result<()> {
        let key = self.next_key.replace(self.next_key.get() + 1);
        let watched = Watched::new(&self.poller, sock, interest(key))?;
        std::future::poll_fn(|cx| {
            if self.fired.borrow_mut().remove(&key) {
                return Poll::Ready(());
            }
            self.wakers.borrow_mut().insert(key, cx.waker().clone());
            Poll::Pending
        })
        .await;
        drop(watched);
        Ok(())
    }

    /// `await loop.sock_accept(sock)`.
    pub async fn sock_accept(&'static self, sock: &Rc<TcpListener>) -> io::Result<TcpStream> {
        loop {
            match sock.accept() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.ready(sock.clone(), Event::readable).await?
                }
                accepted => return accepted.map(|(sock, _)| sock),
            }
        }
    }

    /// `await loop.sock_recv(sock, n)`.
    pub async fn sock_recv(&'static self, sock: &Rc<TcpStream>, n: usize) -> io::Result<Vec<u8>> {
        let mut data = vec![0; n];
        loop {
            match (&**sock).read(&mut data) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.ready(sock.clone(), Event::readable).await?
                }
                read => return read.map(|n| data[..n].to_vec()),
            }
        }
    }

    /// `await loop.sock_sendall(sock, data)`.
    pub async fn sock_sendall(
        &'static self,
        sock: &Rc<TcpStream>,
        mut data: &[u8],
    ) -> io::Result<()> {
        while !data.is_empty() {
            match (&**sock).write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.ready(sock.clone(), Event::writable).await?
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A new loop, for the life of the program.
///
/// # Errors
/// The poller cannot be made.
pub fn new_loop() -> io::Result<&'static Loop> {
    Ok(Box::leak(Box::new(Loop {
        poller: Poller::new()?,
        ready: Arc::default(),
        spawned: RefCell::default(),
        wakers: RefCell::default(),
        fired: RefCell::default(),
        next_key: Cell::new(0),
    })))
}

/// `loop.create_task(run_server()); loop.run()`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let sock = Rc::new(listen(&args.addr, Blocking::No)?);
    let lp = new_loop()?;
    lp.create_task(run_server(lp, sock));
    Ok(lp.run()?)
}

/// `async def run_server()`.
async fn run_server(lp: &'static Loop, sock: Rc<TcpListener>) {
    loop {
        let Ok(client) = lp.sock_accept(&sock).await else {
            continue;
        };
        if client.set_nonblocking(true).is_ok() {
            lp.create_task(handle_client(lp, Rc::new(client)));
        }
    }
}

/// `async def handle_client(sock)`.
async fn handle_client(lp: &'static Loop, sock: Rc<TcpStream>) {
    loop {
        match lp.sock_recv(&sock, 4096).await {
            Ok(data) if !data.is_empty() => {
                if lp.sock_sendall(&sock, &data).await.is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
}
