//! `kiln serve`: the factory runs itself. A crash-safe job queue
//! ([`queue`]), the workers that plan, queue and bake ([`serve`]), what
//! they know right now ([`board`], built by [`view`]), webhooks
//! ([`notify`]), metrics ([`metrics`]), git checkouts ([`git`]), and the
//! HTTP API and dashboard ([`http`]).
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod board;
pub mod git;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod queue;
pub mod serve;
pub mod view;
