//! The selector's callback: one client, the bytes it is owed, and what
//! the loop calls when its socket is ready (the notes' `recv_and_send`).
//! The loop that calls it is in `mod.rs`.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Instant;

use super::work::WorkPlan;
use super::{MAX_UNSENT, Tally};
use crate::lab::live::Counter;
use crate::net::{interrupted, would_block, write_some};
use crate::poller::{Event, Interest, Poller, Registered};
use crate::serve::accept::Visit;
use crate::stats::Ending;

/// One client and the bytes it is owed.
pub(super) struct Connection<'a> {
    /// Registered in the poller for as long as the connection lives.
    pub(super) stream: Registered<'a, TcpStream>,
    /// Echoed bytes the socket has not taken yet, oldest first.
    pub(super) unsent: Vec<u8>,
    /// The client shut down its write side (read returned 0).
    pub(super) read_closed: bool,
    /// What the poller watches for it now: read while it may read and
    /// `unsent` is under the cap, write while `unsent` is not empty.
    pub(super) interest: Interest,
    /// When it last sent or took bytes, for the idle sweep.
    pub(super) last_active: Instant,
    /// Unique over the loop's life: a slab key is reused once its client is
    /// gone, this is not, so a job or timer of a client that left cannot
    /// reach the next one.
    pub(super) id: u64,
    /// Its chunk is with `--work` (a timer or a pool thread): it reads
    /// nothing more until that chunk is echoed, so bytes stay in order.
    pub(super) working: bool,
    /// The chunk waiting out `wait` work (empty otherwise; kept to reuse).
    pub(super) held: Vec<u8>,
    /// Who it is and the bytes echoed to it: counted out and logged when
    /// the connection is dropped, after its socket.
    pub(super) visit: Visit<'a>,
}

impl Connection<'_> {
    /// The echo handler (the notes' `recv_and_send`): called with whatever
    /// the kernel reported ready; returns how the connection ended, if it did.
    ///
    /// Error and hang-up conditions are reported as both readable and
    /// writable, so whatever call we make next returns the error.
    pub(super) fn on_ready(
        &mut self,
        event: Event,
        now: Instant,
        poller: &Poller,
        buffer: &mut [u8],
        plan: Option<&mut WorkPlan>,
        tally: &Tally<'_>,
    ) -> Option<Ending> {
        if self.interest == Interest::NONE {
            // Watched for nothing (its chunk is with its work), yet
            // reported: the kernel reports an error or hang-up whatever the
            // interest, and level-triggered it would report it on every
            // wait until the work is done. The client is gone: close now.
            let e = self.stream.take_error().ok().flatten();
            return Some(Ending::Failed(
                e.unwrap_or_else(|| io::ErrorKind::ConnectionReset.into()),
            ));
        }
        if event.writable {
            if let Err(e) = self.flush(now, tally) {
                return Some(Ending::Failed(e));
            }
        }
        if event.readable && self.interest.read {
            if let Err(ending) = self.read_and_echo(buffer, now, plan, event.key, tally) {
                return Some(ending);
            }
        }
        self.settle(event.key, poller)
    }

    /// After any I/O: whether the connection is done, and otherwise the
    /// interest it needs now.
    pub(super) fn settle(&mut self, key: usize, poller: &Poller) -> Option<Ending> {
        if self.read_closed && self.unsent.is_empty() && !self.working {
            // Half-closed and every byte delivered: done.
            return Some(Ending::Closed);
        }
        // Level-triggered interest only changes when the buffer crosses
        // empty or full: in steady ping-pong there is no epoll_ctl at all.
        let wanted = Interest {
            read: !self.read_closed && self.unsent.len() < MAX_UNSENT && !self.working,
            write: !self.unsent.is_empty(),
        };
        if wanted != self.interest {
            if let Err(e) = poller.modify(&self.stream, key, wanted) {
                return Some(Ending::Failed(e));
            }
            self.interest = wanted;
        }
        None
    }

    /// One `read()`, then echo what it brought (after its `--work`, if
    /// there is a plan).
    fn read_and_echo(
        &mut self,
        buffer: &mut [u8],
        now: Instant,
        plan: Option<&mut WorkPlan>,
        key: usize,
        tally: &Tally<'_>,
    ) -> Result<(), Ending> {
        let room = buffer.len().min(MAX_UNSENT - self.unsent.len());
        let n = match self.stream.read(&mut buffer[..room]) {
            Ok(0) => {
                self.read_closed = true;
                return Ok(());
            }
            Ok(n) => n,
            // A spurious wake-up: nothing to read after all.
            Err(e) if would_block(&e) => {
                tally.would_block.add(1);
                return Ok(());
            }
            Err(e) if interrupted(&e) => return Ok(()),
            // With nothing unsent, a reset is the client leaving, not
            // abandoning an echo.
            Err(e) if self.unsent.is_empty() => return Err(Ending::from_read_error(e)),
            Err(e) => return Err(Ending::Failed(e)),
        };
        self.last_active = now;
        tally.traffic.read(n);
        let data = &buffer[..n];
        crate::lab::crash::check(data);
        // With `--work`, the chunk may go to its work first (echoed when
        // that is done; no reading meanwhile).
        if plan.is_some_and(|plan| self.defer(plan, key, data, now)) {
            return Ok(());
        }
        self.echo(data, now, tally).map_err(Ending::Failed)
    }

    /// Echoes `data`: written at once if nothing is queued before it (the
    /// common case: no copy), queued otherwise.
    pub(super) fn echo(&mut self, data: &[u8], now: Instant, tally: &Tally<'_>) -> io::Result<()> {
        if self.unsent.is_empty() {
            let written = write_some(&mut self.stream, data)?;
            self.visit.bytes += written as u64;
            tally.wrote(written, data.len());
            self.unsent.extend_from_slice(&data[written..]);
        } else {
            self.unsent.extend_from_slice(data);
            self.flush(now, tally)?;
        }
        Ok(())
    }

    /// Writes as much of `unsent` as the socket takes now.
    fn flush(&mut self, now: Instant, tally: &Tally<'_>) -> io::Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let written = write_some(&mut self.stream, &self.unsent)?;
        tally.wrote(written, self.unsent.len());
        self.unsent.drain(..written);
        self.visit.bytes += written as u64;
        if written > 0 {
            self.last_active = now;
        }
        Ok(())
    }
}
