//! The integration tests, in one binary (one build, shared helpers): each
//! module is a behaviour, and says in its first line what it proves.
//! `tests/allocations.rs` is apart because it replaces the allocator.

#[macro_use]
mod common;

mod chat;
mod cli;
mod completion;
mod concurrency;
mod conformance;
mod event_loops;
mod fairness;
mod hardening;
mod live_stats;
mod notes;
mod pitfalls;
mod processes;
mod stalls;
mod threads;
mod tools;
mod tutorial;
