//! The lab around the models: what a reader may skip on a first read.
//!
//! A model file holds its idea (the notes' program, made sound) and calls
//! the lab in a few named lines; everything here is the instruments and
//! the experiments that the flags of `serve` turn on:
//!
//! - [`live`]: `--stats`, a line of counters per interval, in each model's
//!   own terms; [`meter`], the one-thread loops' share of it (waits,
//!   events per wait, busy share).
//! - [`stall`]: the warning when a one-thread loop ran past
//!   `--slow-handler` without waiting.
//! - [`trace`]: `--trace`, each task's life on stderr in the notes' words.
//! - [`work`]: `--work`, what a handler does with each chunk before echoing
//!   it (compute, block, or wait); [`offload`], the pool a one-thread loop
//!   hands blocking work to (`--offload`, `--offload-processes`).
//! - [`defer`]: `--work` that a loop holds under a deadline or hands to
//!   the pool, and resumes only if its client is still there: the
//!   selector's and the completion loop's.
//! - [`crash`]: `--crash-on`, a handler that aborts its process.
//!
//! The lab imports the serving base (`serve::Context`, `stats`), never a
//! model; the models import the lab.

pub mod crash;
pub mod defer;
pub mod live;
pub mod meter;
pub mod offload;
pub mod stall;
pub mod trace;
pub mod work;
