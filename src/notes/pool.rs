//! Step 3: the notes' thread pool, `ThreadPoolExecutor(max_workers=20)`.
//! The accept loop submits each client to a queue; twenty threads take
//! them one by one. The twenty-first client waits in the queue until one
//! of the twenty leaves: the notes' "long running clients". Grows into
//! `serve --mode threadpool`, which bounds the queue (back-pressure) and
//! adds `--idle-timeout`, the notes' remedy.
//!
//! Rust has no executor in its standard library; the pool is a channel
//! and N threads, which is what `ThreadPoolExecutor` is inside (its queue
//! is unbounded too).

use std::net::TcpStream;

use super::sequential::handle_client;
use super::{Args, listen};
use crate::net::Blocking;

/// `run_server()` with `pool.submit(handle_client, client_sock)`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let listener = listen(&args.addr, Blocking::Yes)?;
    // pool = ThreadPoolExecutor(max_workers=20)
    let (submit, queue) = crossbeam_channel::unbounded::<TcpStream>();
    for _ in 0..args.workers {
        let queue = queue.clone();
        // Each worker takes the next client, serves it to the end, repeats.
        std::thread::spawn(move || queue.iter().for_each(handle_client));
    }
    loop {
        let (client, addr) = listener.accept()?;
        eprintln!("Connection from {addr}");
        submit.send(client)?;
    }
}
