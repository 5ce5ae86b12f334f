//! The lines a chat server owes one receiver, and the bound past which
//! that receiver is too slow to keep.

/// The most bytes waiting for one receiver. A receiver that lets more pile
/// up is too slow: it is disconnected and its senders never wait for it.
pub const MAX_PENDING: usize = 256 * 1024;

/// The last line a too-slow receiver is sent, if the socket takes it.
pub const TOO_SLOW: &[u8] = b"error,too slow\n";

/// The lines waiting for one receiver, at most [`MAX_PENDING`] bytes.
///
/// Lines go in whole and come out as bytes the socket took, so a line is
/// never interleaved with another: only its owner writes it out. Past the
/// bound the outbox is *too slow* for good: it keeps the rest of the line
/// the socket has half taken (so that line is not torn), drops the lines
/// behind it, ends with [`TOO_SLOW`], and takes nothing more. Its name is
/// freed at once (senders get `error,no such user`, and never wait); the
/// connection gets [`super::CLOSE_GRACE`] to take those last bytes, then
/// is closed whatever it took. Redis treats a
/// pub/sub client the same way (`client-output-buffer-limit pubsub`): a
/// subscriber that cannot keep up is cut off, not waited for.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    /// Bytes of `bytes` already written.
    sent: usize,
    /// The socket has taken only the start of the line at `sent`.
    mid_line: bool,
    too_slow: bool,
}

impl Outbox {
    /// Queues a whole line. Returns `true` if this line made the receiver
    /// too slow (only once); a line for a too-slow receiver is dropped.
    pub fn push(&mut self, line: &[u8]) -> bool {
        if self.too_slow {
            return false;
        }
        if self.pending().len() + line.len() > MAX_PENDING {
            self.too_slow = true;
            let keep = match self.bytes[self.sent..].iter().position(|&b| b == b'\n') {
                Some(end) if self.mid_line => self.sent + end + 1,
                _ => self.sent,
            };
            self.bytes.truncate(keep);
            self.bytes.extend_from_slice(TOO_SLOW);
            return true;
        }
        if self.sent > 0 && self.sent >= self.bytes.len() / 2 {
            // Move the unsent half down instead of growing forever.
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
        self.bytes.extend_from_slice(line);
        false
    }

    /// The bytes still to write, oldest first.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.sent == self.bytes.len()
    }

    /// Marks the first `n` pending bytes written.
    pub fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.sent += n;
        debug_assert!(self.sent <= self.bytes.len());
        self.mid_line = self.bytes[self.sent - 1] != b'\n';
        if self.is_empty() {
            self.bytes.clear();
            self.sent = 0;
        }
    }

    /// Takes every pending byte out, for a writer that writes them all
    /// outside a lock; the outbox is empty afterwards.
    pub fn take(&mut self) -> Vec<u8> {
        self.mid_line = false;
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.drain(..std::mem::take(&mut self.sent));
        bytes
    }

    /// Whether it went past [`MAX_PENDING`]: its owner disconnects it.
    pub fn is_too_slow(&self) -> bool {
        self.too_slow
    }
}
