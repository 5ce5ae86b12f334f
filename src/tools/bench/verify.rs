//! The verifier of echoed bytes: what one connection has sent and not yet
//! had back, byte for byte, and when each of those messages started.
//!
//! Every byte that comes back is compared with the byte sent at that
//! position of the stream. A lost byte shifts everything after it, a
//! duplicated or reordered one puts a byte where another was due, and a
//! byte beyond what was sent was never sent at all: each is a mismatch,
//! never a silent success.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

/// The bytes a connection is owed, oldest first.
pub(super) struct Expected {
    /// Every byte sent (or queued) and not yet echoed, in stream order.
    bytes: VecDeque<u8>,
    /// When each message not yet wholly echoed started (sent, or due in
    /// open loop), oldest first.
    started: VecDeque<Instant>,
    /// Bytes of the oldest unechoed message already back.
    partial: usize,
    /// Messages wholly echoed so far.
    completed: u64,
}

/// How echoed bytes differ from those sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Mismatch {
    /// More bytes came back than were sent: a duplicate.
    NeverSent(usize),
    /// A byte differs from the one sent at its position (lost, reordered
    /// or corrupted), in this message (counted from 0).
    Differs { message: u64 },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NeverSent(n) => {
                write!(f, "{n} bytes came back that were never sent (duplicated?)")
            }
            Mismatch::Differs { message } => write!(
                f,
                "echoed bytes differ from those sent (lost, reordered or corrupted) in message {message}"
            ),
        }
    }
}

impl Expected {
    /// Room for `messages` messages of `size` bytes without growing.
    pub(super) fn with_capacity(size: usize, messages: usize) -> Self {
        Expected {
            bytes: VecDeque::with_capacity(size * messages),
            started: VecDeque::with_capacity(messages),
            partial: 0,
            completed: 0,
        }
    }

    /// A message was sent (or queued): its bytes are owed from now on.
    pub(super) fn sent(&mut self, message: &[u8], started: Instant) {
        self.bytes.extend(message);
        self.started.push_back(started);
    }

    /// Checks `data`, which just came back, against what is owed; calls
    /// `done` with the start instant of each message it completes.
    ///
    /// # Errors
    /// The bytes differ from those sent; nothing is consumed then.
    pub(super) fn check(
        &mut self,
        data: &[u8],
        size: usize,
        mut done: impl FnMut(Instant),
    ) -> Result<(), Mismatch> {
        if data.len() > self.bytes.len() {
            return Err(Mismatch::NeverSent(data.len() - self.bytes.len()));
        }
        let (a, b) = self.bytes.as_slices();
        let in_a = data.len().min(a.len());
        if data[..in_a] != a[..in_a] || data[in_a..] != b[..data.len() - in_a] {
            return Err(Mismatch::Differs {
                message: self.completed,
            });
        }
        self.bytes.drain(..data.len());
        self.partial += data.len();
        while self.partial >= size {
            self.partial -= size;
            if let Some(started) = self.started.pop_front() {
                done(started);
            }
            self.completed += 1;
        }
        Ok(())
    }

    /// Bytes sent and not yet echoed.
    pub(super) fn unechoed_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// When each message still waiting for (some of) its echo started.
    pub(super) fn waiting_since(&self) -> impl Iterator<Item = Instant> + '_ {
        self.started.iter().copied()
    }

    /// Messages wholly echoed so far.
    pub(super) fn completed(&self) -> u64 {
        self.completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 4;

    /// Two messages of four bytes, `abcd` and `efgh`, owed.
    fn owed() -> (Expected, Instant) {
        let now = Instant::now();
        let mut expected = Expected::with_capacity(SIZE, 2);
        expected.sent(b"abcd", now);
        expected.sent(b"efgh", now);
        (expected, now)
    }

    #[test]
    fn an_exact_echo_in_pieces_completes_each_message_once() {
        let (mut expected, _) = owed();
        let mut done = 0;
        for piece in [&b"ab"[..], b"cdef", b"gh"] {
            expected.check(piece, SIZE, |_| done += 1).unwrap();
        }
        assert_eq!((done, expected.completed()), (2, 2));
        assert_eq!(expected.unechoed_bytes(), 0);
    }

    #[test]
    fn a_lost_byte_is_a_mismatch() {
        let (mut expected, _) = owed();
        let got = expected.check(b"abd", SIZE, |_| {});
        assert_eq!(got, Err(Mismatch::Differs { message: 0 }));
    }

    #[test]
    fn a_duplicated_byte_is_a_mismatch() {
        let (mut expected, _) = owed();
        expected.check(b"abcd", SIZE, |_| {}).unwrap();
        let got = expected.check(b"eefg", SIZE, |_| {});
        assert_eq!(got, Err(Mismatch::Differs { message: 1 }));
        // More than was ever sent, even where the bytes would match.
        let got = expected.check(b"efghh", SIZE, |_| {});
        assert_eq!(got, Err(Mismatch::NeverSent(1)));
    }

    #[test]
    fn reordered_messages_are_a_mismatch() {
        let (mut expected, _) = owed();
        let got = expected.check(b"efghabcd", SIZE, |_| {});
        assert_eq!(got, Err(Mismatch::Differs { message: 0 }));
        assert_eq!(expected.unechoed_bytes(), 8, "nothing consumed");
    }
}
