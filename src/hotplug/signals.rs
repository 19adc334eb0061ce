//! Termination signals during a dock: systemd stops the unit with SIGTERM when the disk is
//! pulled (`BindsTo=`) or the machine shuts down; a terminal sends SIGINT or SIGHUP. Dying of
//! them would leave the mapping on a vanished device and the filesystem mounted. Instead the
//! signals are blocked in every thread and one thread waits for them (`sigwait`): the first
//! one asks the running job to stop at its next safe point; dock then unmounts, closes and
//! says what happened, well within the unit's `TimeoutStopSec`.

use nix::sys::signal::{SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// The signals that end a dock.
pub const TERMINATION: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Which termination signal arrived (if any).
#[derive(Debug, Clone, Default)]
pub struct Received(Arc<AtomicI32>);

impl Received {
    pub fn signal(&self) -> Option<Signal> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            n => Signal::try_from(n).ok(),
        }
    }
    fn set(&self, s: Signal) {
        let _ = self.0.compare_exchange(0, s as i32, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Blocks the termination signals in this thread (and so in every thread started after it)
/// and starts the thread that waits for them; `on_signal` runs there, once per signal.
/// Call it before any other thread exists.
pub fn catch(on_signal: impl Fn(Signal) + Send + 'static) -> std::io::Result<Received> {
    let mut set = SigSet::empty();
    for s in TERMINATION {
        set.add(s);
    }
    set.thread_block().map_err(std::io::Error::from)?;
    let received = Received::default();
    let r = received.clone();
    std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        match set.wait() {
            Ok(s) => {
                r.set(s);
                on_signal(s);
            }
            Err(_) => return,
        }
    })?;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_remembered() {
        let r = Received::default();
        assert_eq!(r.signal(), None);
        r.set(Signal::SIGHUP);
        r.set(Signal::SIGTERM);
        assert_eq!(r.signal(), Some(Signal::SIGHUP));
    }
}
