//! A streaming, sorted walk of the sources, through directory handles.
//!
//! Entries come out in `Path` order (component-wise byte order, parents before children),
//! which is the order of `metadata.tsv`; memory is one sorted name list per open directory.
//! Excludes, one-filesystem and CACHEDIR.TAG are decided here.
//!
//! Every directory is opened `O_NOFOLLOW | O_DIRECTORY` relative to its parent's handle and
//! checked (`fstat`) to be the directory its `stat` described, so a directory swapped for a
//! symlink during the run cannot redirect the walk: the walk reads what it holds, and depth
//! is unlimited. Each entry carries its parent's handle and its name, so the copy opens it
//! relative to the same handle (see [`crate::fsaccess`]).

use crate::fsaccess::{self, hook, Dir, Meta};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a source's own path is resolved.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A host path from the command line or the configuration: its parent is resolved as
    /// any such path (symlinks in it followed, as the user wrote it); the source itself and
    /// everything below is never followed.
    Host,
    /// A path inside an open tree (a generation, for restore): no component may be a
    /// symlink; a restore path through a stored symlink is refused.
    Beneath(Arc<Dir>),
}

/// One source tree: `abs` (shown in messages: the host path, or the path in the tree),
/// stored at `rel` inside the generation's tree.
#[derive(Debug, Clone)]
pub struct Source {
    pub abs: PathBuf,
    pub rel: PathBuf,
    pub origin: Origin,
}

impl PartialEq for Source {
    fn eq(&self, o: &Source) -> bool {
        self.abs == o.abs && self.rel == o.rel
    }
}

impl Source {
    /// A host path backed up under its absolute path (`/home/a` → `home/a`).
    pub fn host(path: &Path) -> io::Result<Source> {
        let abs = std::path::absolute(path)?;
        // Normalise away `.`/`..` lexically so `rel` stays plain.
        let mut clean = PathBuf::from("/");
        for c in abs.components() {
            match c {
                std::path::Component::Normal(n) => clean.push(n),
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                _ => {}
            }
        }
        let rel = clean.strip_prefix("/").unwrap_or(&clean).to_path_buf();
        Ok(Source { abs: clean, rel, origin: Origin::Host })
    }

    /// `rel` inside the open `tree` (shown as `shown`).
    pub fn beneath(tree: Arc<Dir>, shown: PathBuf, rel: PathBuf) -> Source {
        Source { abs: shown, rel, origin: Origin::Beneath(tree) }
    }

    /// Opens the directory holding `rel` (an ancestor or the source itself, a path below
    /// the tree root): the handle and the last component's name.
    fn open_parent_of(&self, rel: &Path, abs: &Path) -> io::Result<(Arc<Dir>, OsString)> {
        let name = rel.file_name().map(OsStr::to_os_string);
        match &self.origin {
            Origin::Host => {
                let parent = abs.parent().unwrap_or(Path::new("/"));
                Ok((Arc::new(Dir::open_path(parent)?), abs.file_name().map(OsStr::to_os_string).unwrap_or_default()))
            }
            Origin::Beneath(tree) => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                Ok((Arc::new(tree.open_beneath(parent)?), name.unwrap_or_default()))
            }
        }
    }
}

/// Sorts sources in walk order and drops any inside another.
pub fn normalise_sources(mut sources: Vec<Source>) -> Vec<Source> {
    sources.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut out: Vec<Source> = Vec::new();
    for s in sources {
        if out.last().is_some_and(|prev: &Source| s.rel.starts_with(&prev.rel)) {
            continue;
        }
        out.push(s);
    }
    out
}

/// Shell-style patterns: `*` and `?` stop at `/`, `**` crosses it, `[...]` classes.
/// A pattern without `/` matches a name at any depth; with `/`, the whole path from the
/// root (a leading `/` is optional). A trailing `/` matches directories only.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    glob: Vec<u8>,
    anchored: bool,
    dir_only: bool,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Excludes {
        let mut ex = Excludes::default();
        for p in patterns {
            ex.add(p);
        }
        ex
    }

    pub fn add(&mut self, pattern: &str) {
        let mut p = pattern.as_bytes();
        if p.is_empty() {
            return;
        }
        let dir_only = p.len() > 1 && p.ends_with(b"/");
        if dir_only {
            p = &p[..p.len() - 1];
        }
        let anchored = p.contains(&b'/');
        let p = p.strip_prefix(b"/").unwrap_or(p);
        self.patterns.push(Pattern { glob: p.to_vec(), anchored, dir_only });
    }

    /// Reads an exclude file: one pattern a line, `#` comments and blank lines ignored.
    pub fn add_file(&mut self, path: &Path) -> io::Result<()> {
        let text = read_exclude_file(path)?;
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add(line);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `rel` is the path as stored (no leading `/`).
    pub fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        let full = rel.as_os_str().as_bytes();
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or(full);
        self.patterns.iter().any(|p| {
            (!p.dir_only || is_dir) && glob_match(&p.glob, if p.anchored { full } else { name })
        })
    }
}

/// Matches `text` against `pat` completely.
pub fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    match pat.first() {
        None => text.is_empty(),
        Some(b'*') if pat.get(1) == Some(&b'*') => {
            let mut rest = &pat[2..];
            // `**/` may also match nothing at all.
            if rest.first() == Some(&b'/') && glob_match(&rest[1..], text) {
                return true;
            }
            while rest.first() == Some(&b'*') {
                rest = &rest[1..];
            }
            (0..=text.len()).any(|i| glob_match(rest, &text[i..]))
        }
        Some(b'*') => {
            let rest = &pat[1..];
            for i in 0..=text.len() {
                if glob_match(rest, &text[i..]) {
                    return true;
                }
                if i < text.len() && text[i] == b'/' {
                    break;
                }
            }
            false
        }
        Some(b'?') => !text.is_empty() && text[0] != b'/' && glob_match(&pat[1..], &text[1..]),
        Some(b'[') => {
            let Some(&c) = text.first() else { return false };
            match class_match(&pat[1..], c) {
                Some((ok, used)) => ok && c != b'/' && glob_match(&pat[1 + used..], &text[1..]),
                // An unclosed `[` is a literal.
                None => c == b'[' && glob_match(&pat[1..], &text[1..]),
            }
        }
        Some(b'\\') if pat.len() > 1 => text.first() == Some(&pat[1]) && glob_match(&pat[2..], &text[1..]),
        Some(&p) => text.first() == Some(&p) && glob_match(&pat[1..], &text[1..]),
    }
}

/// Returns (matched, bytes of pattern used including `]`).
fn class_match(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(pat.first(), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = pat[i];
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            matched |= lo <= c && c <= pat[i + 2];
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// True when the open directory holds a valid CACHEDIR.TAG (see bford.info/cachedir).
pub fn has_cachedir_tag(dir: &Dir) -> bool {
    use std::io::Read;
    let mut buf = [0u8; CACHEDIR_SIGNATURE.len()];
    match dir.open_file(OsStr::new("CACHEDIR.TAG"), None) {
        Ok((mut f, _)) => f.read_exact(&mut buf).is_ok() && buf == CACHEDIR_SIGNATURE,
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    pub excludes: Excludes,
    pub one_file_system: bool,
    pub exclude_caches: bool,
    /// Directories never walked, by (device, inode): the backup root itself.
    pub skip: Vec<(u64, u64)>,
}

/// One object found by the walk.
#[derive(Debug)]
pub struct WalkEntry {
    /// The directory that holds it, and its name there (how the copy reaches it).
    pub parent: Arc<Dir>,
    pub name: OsString,
    /// Shown in messages (the host path).
    pub src: PathBuf,
    /// Where it is stored in the generation's tree.
    pub rel: PathBuf,
    pub meta: Meta,
    /// For a directory: its own open handle (None when it could not be opened).
    pub dir: Option<Arc<Dir>>,
    /// A directory whose contents were not walked (other filesystem, an ancestor).
    pub not_descended: bool,
    /// Index of the source it belongs to (ancestors: the source they lead to).
    pub source: usize,
}

/// Why an entry is missing from the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Could not be read (permission, I/O error, a name the target cannot hold): the run
    /// is incomplete.
    NotBackedUp,
    /// Vanished or was replaced while the run was reading it.
    Vanished,
}

/// A problem with one path that does not stop the walk.
#[derive(Debug)]
pub struct WalkWarning {
    pub path: PathBuf,
    pub error: io::Error,
    pub missed: Missed,
}

impl WalkWarning {
    pub fn new(path: PathBuf, error: io::Error) -> WalkWarning {
        let missed = if error.kind() == io::ErrorKind::NotFound { Missed::Vanished } else { Missed::NotBackedUp };
        WalkWarning { path, error, missed }
    }
}

impl std::fmt::Display for WalkWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

struct Frame {
    dir: Arc<Dir>,
    src: PathBuf,
    rel: PathBuf,
    dev: u64,
    source: usize,
    /// Sorted descending so `pop` yields ascending order.
    names: Vec<OsString>,
}

pub struct Walker {
    opts: WalkOptions,
    sources: std::iter::Enumerate<std::vec::IntoIter<Source>>,
    queued: std::collections::VecDeque<Result<WalkEntry, WalkWarning>>,
    stack: Vec<Frame>,
    last_ancestors: Vec<PathBuf>,
    pending_frame: Option<Frame>,
}

/// Opens the directory `name` in `parent` that `seen` described, checking it is the same
/// object: a swap in between (for a symlink, another directory) is noticed, never followed.
fn open_seen_dir(parent: &Dir, name: &OsStr, seen: &Meta) -> io::Result<Dir> {
    let d = parent.open_dir(name)?;
    if !d.meta()?.same_object(seen) {
        return Err(changed());
    }
    Ok(d)
}

fn changed() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "changed during the backup (replaced while being read)")
}

impl Walker {
    /// `sources` must come from [`normalise_sources`].
    pub fn new(sources: Vec<Source>, opts: WalkOptions) -> Walker {
        Walker {
            opts,
            sources: sources.into_iter().enumerate(),
            queued: Default::default(),
            stack: Vec::new(),
            last_ancestors: Vec::new(),
            pending_frame: None,
        }
    }

    fn open_frame(&mut self, dir: Arc<Dir>, src: PathBuf, rel: PathBuf, dev: u64, source: usize) -> Result<(), WalkWarning> {
        let entries = dir.entries().map_err(|error| WalkWarning::new(src.clone(), error))?;
        let mut names: Vec<OsString> = entries.into_iter().map(|e| e.name).collect();
        names.reverse();
        // The directory itself is emitted first; its children follow on later calls.
        self.pending_frame = Some(Frame { dir, src, rel, dev, source, names });
        Ok(())
    }

    /// Emits a directory and arranges to walk it unless excluded by policy.
    #[allow(clippy::too_many_arguments)]
    fn enter(&mut self, parent: Arc<Dir>, name: OsString, src: PathBuf, rel: PathBuf, meta: Meta, parent_dev: Option<u64>, source: usize) -> Result<WalkEntry, WalkWarning> {
        let other_fs = self.opts.one_file_system && parent_dev.is_some_and(|d| d != meta.dev);
        let dir = match open_seen_dir(&parent, &name, &meta) {
            Ok(d) => Arc::new(d),
            Err(error) => return Err(WalkWarning::new(src, error)),
        };
        if !other_fs {
            if let Err(w) = self.open_frame(Arc::clone(&dir), src.clone(), rel.clone(), meta.dev, source) {
                self.queued.push_back(Err(w));
            }
        }
        Ok(WalkEntry { parent, name, src, rel, meta, dir: Some(dir), not_descended: other_fs, source })
    }

    fn start_source(&mut self, index: usize, s: Source) {
        // Ancestors of the source (e.g. `home` for `/home/a`) carry their own metadata.
        let mut ancestors = Vec::new();
        let (mut r, mut a) = (s.rel.clone(), s.abs.clone());
        while r.pop() {
            a.pop();
            if r.as_os_str().is_empty() {
                break;
            }
            ancestors.push((a.clone(), r.clone()));
        }
        ancestors.reverse();
        for (a, r) in &ancestors {
            if self.last_ancestors.contains(r) {
                continue;
            }
            let e = s.open_parent_of(r, a).and_then(|(parent, name)| {
                let meta = parent.stat(&name)?;
                let dir = if meta.is_dir() { Some(Arc::new(open_seen_dir(&parent, &name, &meta)?)) } else { None };
                Ok(WalkEntry { parent, name, src: a.clone(), rel: r.clone(), meta, dir, not_descended: true, source: index })
            });
            self.queued.push_back(e.map_err(|error| WalkWarning::new(a.clone(), error)));
        }
        self.last_ancestors = ancestors.into_iter().map(|(_, r)| r).collect();
        let opened = s.open_parent_of(&s.rel, &s.abs).and_then(|(parent, name)| {
            let meta = if name.is_empty() { parent.meta()? } else { parent.stat(&name)? };
            Ok((parent, name, meta))
        });
        match opened {
            // The filesystem root as a source: its handle is its own parent.
            Ok((parent, name, meta)) if name.is_empty() => {
                let dir = Arc::clone(&parent);
                match self.open_frame(Arc::clone(&dir), s.abs.clone(), s.rel.clone(), meta.dev, index) {
                    Ok(()) => self.queued.push_back(Ok(WalkEntry { parent, name, src: s.abs, rel: s.rel, meta, dir: Some(dir), not_descended: false, source: index })),
                    Err(w) => self.queued.push_back(Err(w)),
                }
            }
            Ok((parent, name, meta)) if meta.is_dir() => {
                let e = self.enter(parent, name, s.abs, s.rel, meta, None, index);
                // The entry goes before any warning `enter` queued about reading it.
                let warnings: Vec<_> = self.queued.drain(..).collect();
                let (ancestors, rest): (Vec<_>, Vec<_>) = warnings.into_iter().partition(|w| w.is_ok());
                self.queued.extend(ancestors);
                self.queued.push_back(e);
                self.queued.extend(rest);
            }
            Ok((parent, name, meta)) => {
                self.queued.push_back(Ok(WalkEntry { parent, name, src: s.abs, rel: s.rel, meta, dir: None, not_descended: false, source: index }))
            }
            Err(error) => self.queued.push_back(Err(WalkWarning::new(s.abs, error))),
        }
    }
}

impl Iterator for Walker {
    type Item = Result<WalkEntry, WalkWarning>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(q) = self.queued.pop_front() {
                return Some(q);
            }
            if let Some(f) = self.pending_frame.take() {
                self.stack.push(f);
            }
            if let Some(frame) = self.stack.last_mut() {
                let Some(name) = frame.names.pop() else {
                    self.stack.pop();
                    continue;
                };
                let src = frame.src.join(&name);
                let rel = frame.rel.join(&name);
                let (dev, source, parent) = (frame.dev, frame.source, Arc::clone(&frame.dir));
                let meta = match parent.stat(&name) {
                    Ok(m) => m,
                    // Vanished since the directory was read: nothing to back up.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Some(Err(WalkWarning::new(src, error))),
                };
                hook::at(hook::Point::WalkStatted, &rel);
                let is_dir = meta.is_dir();
                if self.opts.excludes.matches(&rel, is_dir) {
                    continue;
                }
                if is_dir {
                    if self.opts.skip.contains(&(meta.dev, meta.ino)) {
                        continue;
                    }
                    let e = match self.enter(Arc::clone(&parent), name.clone(), src.clone(), rel.clone(), meta, Some(dev), source) {
                        // Swapped between the stat and the open: look once more and take what
                        // is there now (a symlink is backed up as a symlink, never followed).
                        Err(w) if w.error.kind() != io::ErrorKind::PermissionDenied => match parent.stat(&name) {
                            Ok(now) if !now.is_dir() => {
                                return Some(Ok(WalkEntry { parent, name, src, rel, meta: now, dir: None, not_descended: false, source }))
                            }
                            _ => Err(w),
                        },
                        e => e,
                    };
                    if self.opts.exclude_caches {
                        if let Some(f) = &self.pending_frame {
                            if has_cachedir_tag(&f.dir) {
                                self.pending_frame = None;
                                self.queued.clear();
                                continue;
                            }
                        }
                    }
                    return Some(e);
                }
                return Some(Ok(WalkEntry { parent, name, src, rel, meta, dir: None, not_descended: false, source }));
            }
            let (i, s) = self.sources.next()?;
            self.start_source(i, s);
        }
    }
}

/// Reads an exclude file (a host path the administrator named).
fn read_exclude_file(path: &Path) -> io::Result<String> {
    fs::read_to_string(path)
}

/// `lstat` of a configured source path, for checks before the walk.
pub fn source_meta(path: &Path) -> io::Result<Meta> {
    fsaccess::lstat_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.tmp", b"a.tmp"));
        assert!(!glob_match(b"*.tmp", b"d/a.tmp"));
        assert!(glob_match(b"home/*/.cache", b"home/al/.cache"));
        assert!(!glob_match(b"home/*/.cache", b"home/al/x/.cache"));
        assert!(glob_match(b"home/**/.cache", b"home/al/x/.cache"));
        assert!(glob_match(b"**/x", b"x"));
        assert!(glob_match(b"f?o", b"foo"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"[x", b"[x"));
        let ex = Excludes::new(&["*.o".into(), "/tmp/build/".into(), "node_modules/".into()]);
        assert!(ex.matches(Path::new("src/a.o"), false));
        assert!(ex.matches(Path::new("tmp/build"), true));
        assert!(!ex.matches(Path::new("tmp/build"), false));
        assert!(ex.matches(Path::new("p/node_modules"), true));
        assert!(!ex.matches(Path::new("p/node_modules.txt"), false));
    }

    #[test]
    fn nested_sources_collapse_and_sort() {
        let s = |p: &str| Source::host(Path::new(p)).unwrap();
        let out = normalise_sources(vec![s("/b"), s("/a/x"), s("/a"), s("/a.b")]);
        let rels: Vec<_> = out.iter().map(|s| s.rel.to_str().unwrap().to_string()).collect();
        assert_eq!(rels, ["a", "a.b", "b"]);
        assert_eq!(s("/x/./y/../z").rel, Path::new("x/z"));
    }
}
