//! echo-lab: one TCP echo protocol (RFC 862), eight concurrency models (and
//! the notes' chat on six of them), and the tools to watch and measure the
//! difference.
//!
//! This crate is teaching code: each model lives whole in one file, and the
//! files read in the order of the notes they follow. Read the modules in
//! this order:
//!
//! 1. [`net`]: the one socket setup every model shares, and the kernel's
//!    answers every model must handle (WouldBlock, EINTR, EMFILE);
//!    [`poller`], the readiness interface every event loop waits through,
//!    with its three backends (`polling`, our own epoll, poll(2)).
//! 2. [`shutdown`] and [`stats`]: how a server is stopped, and what it counts;
//!    [`sys`], the few system calls outside the poller (limits, CPU time,
//!    placement, signals).
//! 3. [`serve`]: the models, each in its own file, in the order of the
//!    notes: [`serve::blocking::sequential`], [`serve::blocking::threads`], [`serve::blocking::forking`]
//!    (a process per client), [`serve::blocking::threadpool`], [`serve::readiness::selector`], [`serve::statemachine`], [`serve::asynchronous`]
//!    (with its [executor](serve::asynchronous::executor) and
//!    [reactor](serve::asynchronous::reactor)), then `serve::completion`
//!    (one io_uring, Linux), and [`serve::chat`], the notes' chat, where
//!    the models meet shared state; [`serve::processes`] runs any model in
//!    worker processes under a master.
//! 4. [`tools`]: the instruments that talk to any echo server:
//!    [`tools::client`], [`tools::probe`], [`tools::bench`] (a load generator
//!    that verifies every byte) and [`tools::compare`].
//! 5. [`cli`]: the command line that starts them all; [`parse`], the parsers
//!    of every value a user types.
//!
//! The walkthrough for a new reader is `docs/tutorial/README.md`; how the
//! pieces fit is `docs/architecture.md`.
//!
//! It is not a production echo server: it is a lab for seeing how each model
//! behaves, built to the standard of one.

pub mod cli;
pub mod lab;
pub mod net;
pub mod notes;
pub mod parse;
pub mod poller;
pub mod serve;
pub mod shutdown;
pub mod stats;
pub mod sys;
pub mod tools;
