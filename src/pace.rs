//! A transfer's minimum rate: each window must bring at least so many
//! bytes. Checked when a window ends, whatever arrives: a timer that
//! restarted on every piece would let one byte every few seconds hold a
//! transfer for ever.

use std::time::{Duration, Instant};

pub(crate) struct Pace {
    window: Duration,
    min_bytes: u64,
    window_start: Instant,
    in_window: u64,
}

impl Pace {
    pub(crate) fn new(min_bytes: u64, window: Duration) -> Pace {
        Pace {
            window,
            min_bytes,
            window_start: Instant::now(),
            in_window: 0,
        }
    }

    /// When the window under way ends.
    pub(crate) fn deadline(&self) -> Instant {
        self.window_start + self.window
    }

    pub(crate) fn moved(&mut self, bytes: usize) {
        self.in_window += bytes as u64;
    }

    /// At the window's end: the next one starts if this one brought
    /// enough; else why not.
    pub(crate) fn next_window(&mut self) -> Result<(), String> {
        if self.in_window < self.min_bytes {
            return Err(format!(
                "{} bytes came in {:?}; at least {} are needed",
                self.in_window, self.window, self.min_bytes
            ));
        }
        self.window_start = Instant::now();
        self.in_window = 0;
        Ok(())
    }
}
