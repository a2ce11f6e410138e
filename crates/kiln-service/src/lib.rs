//! `kiln serve`: the factory runs itself. Work in progress (issue 18): so
//! far the crash-safe job queue ([`queue`]) and the loop that plans,
//! queues and bakes ([`serve`]); the HTTP API, dashboard, metrics and
//! notifications are still to come.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod queue;
pub mod serve;
