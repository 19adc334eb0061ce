//! Test hooks: named points where a test may act (swap a directory for a symlink, say)
//! exactly between two steps of a run, so races are tested deterministically instead of
//! by luck. Unset, a point costs one relaxed atomic load. Only reachable from Rust code
//! linked with the library (the tests); no environment variable or option sets one.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Where a run is when the hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The walk has `stat`ed an entry (path relative to the generation tree) and not yet
    /// opened it (or, for a directory, not yet entered it).
    WalkStatted,
    /// A directory's children are all written; its metadata is about to be applied.
    DirComplete,
    /// Restore is about to create an entry below DEST.
    RestoreEntry,
}

type Hook = Arc<dyn Fn(Point, &Path) + Send + Sync>;

static SET: AtomicBool = AtomicBool::new(false);
static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Installs `f` until the returned guard is dropped.
pub fn set(f: impl Fn(Point, &Path) + Send + Sync + 'static) -> Guard {
    *HOOK.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    SET.store(true, Ordering::SeqCst);
    Guard(())
}

pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        SET.store(false, Ordering::SeqCst);
        *HOOK.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Calls the hook, if one is set.
#[inline]
pub fn at(point: Point, rel: &Path) {
    if SET.load(Ordering::Relaxed) {
        let h = HOOK.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(h) = h {
            h(point, rel);
        }
    }
}
