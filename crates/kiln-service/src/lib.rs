//! `kiln serve`: the factory runs itself. Work in progress (issue 18): so
//! far the crash-safe job queue ([`queue`]).
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod queue;
