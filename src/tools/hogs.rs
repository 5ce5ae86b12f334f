//! Clients that never pause: the noisy neighbours of `bench --hogs`.
//!
//! A hog keeps its connection busy in both directions for as long as it
//! runs: one thread sends 64 KiB blocks back to back, another reads
//! whatever comes back, as fast as the kernel hands it over. The server's
//! socket for a hog is therefore readable (and writable) at every moment,
//! which is the worst case for a loop's fairness: a loop that serves a
//! ready socket until it would block never leaves a hog. The clients
//! measured beside the hogs show whether everyone else still gets a turn.
//!
//! An echo hog sends bytes of no meaning (nothing checks them). A chat hog
//! registers and sends `chat` lines to a name nobody holds: each costs the
//! server a parse, a look-up and a reply (`error,no such user`, which is
//! not a bad line that counts toward an expulsion), and what comes back is
//! a fraction of what went out, so the hog is never cut off as a receiver
//! too slow to take its replies, and nobody else is disturbed by it.
//!
//! Dropping [`Hogs`] stops them: it shuts their sockets down, which wakes
//! both threads from their blocking calls, and joins them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

use crate::net::connect_patiently;
use crate::parse::HostPort;
use crate::serve::Protocol;
use crate::tools::handshake::register;

/// Bytes a hog writes per `write()`: as much as a socket buffer takes in
/// one go, so the hog never waits on itself.
const BLOCK: usize = 64 * 1024;

/// How long starting a hog (connecting, and for the chat registering) may
/// take.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Running hogs; stopped when dropped.
pub struct Hogs {
    streams: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Bytes the hogs have received back, all together.
    received: Arc<AtomicU64>,
}

impl Hogs {
    /// Connects `count` hogs to `addr` speaking `protocol`, and sets them
    /// going.
    ///
    /// # Errors
    /// A hog could not connect, or (chat) was not registered.
    pub fn start(addr: &HostPort, count: usize, protocol: Protocol) -> anyhow::Result<Hogs> {
        let mut hogs = Hogs {
            streams: Vec::with_capacity(count),
            threads: Vec::with_capacity(2 * count),
            stop: Arc::new(AtomicBool::new(false)),
            received: Arc::new(AtomicU64::new(0)),
        };
        for i in 0..count {
            let stream = connect_patiently(addr, START_LIMIT)
                .with_context(|| format!("connecting hog {} of {count}", i + 1))?;
            let (stream, block) = match protocol {
                Protocol::Echo => (stream, vec![b'h'; BLOCK]),
                Protocol::Chat => {
                    let name = format!("hog{}-{i}", std::process::id());
                    register(&stream, &name, START_LIMIT)?;
                    // The hog's reader waits as long as the run lasts.
                    stream.set_read_timeout(None)?;
                    (stream, chat_block(&name))
                }
            };
            hogs.spawn(stream, block)?;
        }
        Ok(hogs)
    }

    /// Starts the two threads of one hog.
    fn spawn(&mut self, stream: TcpStream, block: Vec<u8>) -> anyhow::Result<()> {
        stream.set_nodelay(true)?;
        let mut writer = stream.try_clone()?;
        let mut reader = stream.try_clone()?;
        self.streams.push(stream);
        let stop = self.stop.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name("hog-writer".into())
                .spawn(
                    move || {
                        while !stop.load(Relaxed) && writer.write_all(&block).is_ok() {}
                    },
                )?,
        );
        let received = self.received.clone();
        self.threads.push(
            std::thread::Builder::new()
                .name("hog-reader".into())
                .spawn(move || {
                    let mut buffer = vec![0; BLOCK];
                    while let Ok(n @ 1..) = reader.read(&mut buffer) {
                        received.fetch_add(n as u64, Relaxed);
                    }
                })?,
        );
        Ok(())
    }

    /// Bytes the hogs have had back so far.
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wakes a writer blocked in send() and a reader blocked in recv().
        for stream in &self.streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A block of whole `chat` lines from `name` to a name nobody holds.
fn chat_block(name: &str) -> Vec<u8> {
    let line = format!("chat,{name}-nobody,{}\n", "h".repeat(100));
    line.repeat(BLOCK / line.len()).into_bytes()
}
