//! Desktop notifications (org.freedesktop.Notifications on the session bus, via notify-rust).
//! Texts that come from the disk (labels) or udev (model, serial) are passed as plain
//! strings; notification servers may interpret a small markup subset, so `<` and `&` are
//! escaped first.

use super::HotplugError;
use notify_rust::{Hint, Notification, Timeout, Urgency};

const APP: &str = "offdisk";
const ICON: &str = "drive-harddisk";

/// Escapes the body markup some servers understand; keeps line breaks, drops other controls.
pub fn plain(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_control() && c != '\n' { ' ' } else { c }).collect();
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bodies_are_plain_text() {
        assert_eq!(super::plain("a <b>&\x1b[31m\nnext"), "a &lt;b&gt;&amp; [31m\nnext");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Low,
    Normal,
    Critical,
}

/// Shows a notification; `replaces` is the id of one to update in place (progress).
/// Returns the id the server gave it.
pub fn show(summary: &str, body: &str, level: Level, replaces: Option<u32>) -> Result<u32, HotplugError> {
    let mut n = Notification::new();
    n.appname(APP).summary(&super::ask_password::one_line(summary)).body(&plain(body)).icon(ICON);
    n.urgency(match level {
        Level::Low => Urgency::Low,
        Level::Normal => Urgency::Normal,
        Level::Critical => Urgency::Critical,
    });
    if level == Level::Low {
        n.hint(Hint::Transient(true));
    }
    n.timeout(if level == Level::Critical { Timeout::Never } else { Timeout::Milliseconds(10_000) });
    if let Some(id) = replaces {
        n.id(id);
    }
    let h = n.show().map_err(|e| HotplugError::Notify(e.to_string()))?;
    Ok(h.id())
}

/// What the user did with an "Unlock?" notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Unlock,
    /// "Not now": the user declines; the request is cancelled.
    Later,
    /// Dismissed, or timed out on the server: let other agents answer.
    Dismissed,
}

/// Shows "Unlock backup disk …?" with an Unlock action (also the default action, so a
/// click on the bubble works too) and a "Not now" action. Returns at once with the
/// notification's id; `done` is called from another thread with what the user did.
pub fn ask_unlock(summary: &str, body: &str, done: Box<dyn FnOnce(Choice) + Send>) -> Result<u32, HotplugError> {
    let h = Notification::new()
        .appname(APP)
        .summary(&super::ask_password::one_line(summary))
        .body(&plain(body))
        .icon(ICON)
        .action("default", "Unlock")
        .action("unlock", "Unlock")
        .action("later", "Not now")
        .hint(Hint::Resident(true))
        .urgency(Urgency::Critical)
        .timeout(Timeout::Never)
        .show()
        .map_err(|e| HotplugError::Notify(e.to_string()))?;
    let id = h.id();
    std::thread::spawn(move || {
        let mut choice = Choice::Dismissed;
        h.wait_for_action(|action| {
            choice = match action {
                "default" | "unlock" => Choice::Unlock,
                "later" => Choice::Later,
                _ => Choice::Dismissed,
            };
        });
        done(choice);
    });
    Ok(id)
}

