//! kiln's factory graph spread over a CI engine: `cron` turns a factory's
//! schedule (read in its time zone) into the UTC cron lines a CI engine
//! takes.

pub mod cron;
pub mod github;
