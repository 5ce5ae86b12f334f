//! The instruments: they talk to any echo server, ours or not.
//!
//! - [`client`]: type and see the echo, or pipe a file through.
//! - [`probe`]: a timeline of who waits for whom, and [`probe_svg`], the
//!   same timeline as a picture.
//! - [`bench`](mod@bench): a load generator that verifies every byte.
//! - [`compare`]: every model under the same load, in one table and chart.
//! - [`hogs`]: clients that never pause, beside a bench's measured ones.
//! - [`handshake`]: the chat's `register,NAME` and `ok`, for every tool
//!   that speaks the chat.
//! - [`race`] and [`flood`]: the chat's pitfalls tried from outside, a
//!   registration race and a receiver that never reads (chapter 8).
//! - [`interrupt`]: Ctrl-C for a tool with child processes: stop them first.

pub mod bench;
pub mod client;
pub mod compare;
pub mod flood;
pub mod handshake;
pub mod hogs;
pub mod interrupt;
pub mod probe;
pub mod probe_svg;
pub mod race;
