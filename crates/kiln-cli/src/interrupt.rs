//! Ctrl-C and SIGTERM: what this process left in the store's tmp is
//! removed, then kiln exits as the signal would have ended it (130, 143).
//! Everything else an interrupted kiln leaves is whole or invisible: store
//! writes are renamed into place, and step helpers die with it.

use std::path::PathBuf;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Starts the thread that cleans up when a signal comes (once per process).
pub fn clean_up_on_signal(tmp: PathBuf) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
            return; // kiln then ends as it always did; fsck clears tmp
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                kiln_store::remove_temps_of(&tmp, std::process::id());
                std::process::exit(128 + signal);
            }
        });
    });
}
