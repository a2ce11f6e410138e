//! `kiln rollout`: long-lived services replaced blue-green from fresh
//! images. [`driver`] is the interface instances run behind ([`docker`]
//! today), [`haproxy`] the traffic front switched through its runtime
//! API, [`health`] the checks, [`state`] the rollout database, and
//! [`rollout`] the recorded steps that move traffic from blue to green and
//! back; [`deploy`] starts one from a factory's lock, for the commands and
//! the service; [`pin`] pins Kubernetes manifests to the lock.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod deploy;
pub mod docker;
pub mod driver;
pub mod haproxy;
pub mod health;
pub mod pin;
pub mod qemu;
pub mod rollout;
pub mod state;
