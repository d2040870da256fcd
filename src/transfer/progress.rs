//! What a long transfer shows while it works: on a terminal, one line
//! redrawn in place (bytes, blobs, rate, ETA); and, terminal or not, one
//! line per image as it is done.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// Whether each image's line is printed.
    lines: bool,
    blobs: AtomicU64,
    blobs_total: AtomicU64,
}

impl Progress {
    /// For a command: the running line on stderr when it is a terminal,
    /// image lines on stdout.
    pub fn command() -> Progress {
        Progress::with(ProgressDrawTarget::stderr(), true)
    }

    /// Shows nothing.
    pub fn silent() -> Progress {
        Progress::with(ProgressDrawTarget::hidden(), false)
    }

    fn with(target: ProgressDrawTarget, lines: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{bytes} of {total_bytes}, {msg}, {binary_bytes_per_sec}, ETA {eta}",
            )
            .expect("the template is valid"),
        );
        Progress {
            bar,
            lines,
            blobs: AtomicU64::new(0),
            blobs_total: AtomicU64::new(0),
        }
    }

    /// What there is to do, once it is known.
    pub fn start(&self, bytes: u64, blobs: u64) {
        self.blobs_total.store(blobs, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.reset_eta();
        self.show_blobs();
    }

    /// `reader`, with every byte it gives counted.
    pub fn reader<'a, R: Read + Send + 'a>(&self, reader: R) -> impl Read + Send + 'a {
        self.bar.wrap_read(reader)
    }

    /// A blob that needs no reading: its bytes count as done.
    pub fn skip(&self, bytes: u64) {
        self.bar.inc(bytes);
        self.blob_done();
    }

    pub fn blob_done(&self) {
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.show_blobs();
    }

    fn show_blobs(&self) {
        self.bar.set_message(format!(
            "{}/{} blobs",
            self.blobs.load(Ordering::Relaxed),
            self.blobs_total.load(Ordering::Relaxed)
        ));
    }

    /// One image's line, above the running line.
    pub fn say(&self, line: &str) {
        if self.lines {
            self.bar.suspend(|| println!("{line}"));
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
