//! The progress bar on a terminal: files, bytes, rate and (when the previous generation
//! gives an estimate of the total) ETA. Silent when not enabled.

use super::engine::Stats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `expected` is (files, bytes) of the previous generation, a fair guess of the total.
    pub fn new(enabled: bool, expected: Option<(u64, u64)>) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let bar = match expected {
            Some((_, bytes)) if bytes > 0 => {
                let b = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr_with_hz(4));
                b.set_style(
                    ProgressStyle::with_template("{bar:30} {msg} {bytes}/~{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            }
            _ => {
                let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
                b.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b
            }
        };
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress { bar: Some(bar) }
    }

    pub fn update(&mut self, s: &Stats) {
        if let Some(b) = &self.bar {
            if b.length().is_some_and(|l| s.bytes > l) {
                b.set_length(s.bytes);
            }
            b.set_position(s.bytes);
            b.set_message(format!("{} files ({} new)", s.files, s.copied_files));
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
