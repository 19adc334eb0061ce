//! A streaming, sorted walk of the sources.
//!
//! Entries come out in `Path` order (component-wise byte order, parents before children),
//! which is the order of `metadata.tsv`; memory is one sorted name list per open directory.
//! Excludes, one-filesystem and CACHEDIR.TAG are decided here.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One source tree: `abs` on the host, stored at `rel` inside the generation's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub abs: PathBuf,
    pub rel: PathBuf,
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
        Ok(Source { abs: clean, rel })
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
        let text = fs::read_to_string(path)?;
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

/// True when `dir` holds a valid CACHEDIR.TAG (see bford.info/cachedir).
pub fn has_cachedir_tag(dir: &Path) -> bool {
    let mut buf = [0u8; CACHEDIR_SIGNATURE.len()];
    match fs::File::open(dir.join("CACHEDIR.TAG")) {
        Ok(mut f) => f.read_exact(&mut buf).is_ok() && buf == CACHEDIR_SIGNATURE,
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    pub excludes: Excludes,
    pub one_file_system: bool,
    pub exclude_caches: bool,
    /// Absolute paths never walked (the backup root itself).
    pub skip: Vec<PathBuf>,
}

/// One object found by the walk.
#[derive(Debug)]
pub struct WalkEntry {
    pub src: PathBuf,
    pub rel: PathBuf,
    pub meta: Metadata,
    /// A directory whose contents were not walked (other filesystem).
    pub not_descended: bool,
}

/// A problem with one path that does not stop the walk.
#[derive(Debug)]
pub struct WalkWarning {
    pub path: PathBuf,
    pub error: io::Error,
}

impl std::fmt::Display for WalkWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

struct Frame {
    src: PathBuf,
    rel: PathBuf,
    dev: u64,
    /// Sorted descending so `pop` yields ascending order.
    names: Vec<OsString>,
}

pub struct Walker {
    opts: WalkOptions,
    sources: std::vec::IntoIter<Source>,
    queued: std::collections::VecDeque<Result<WalkEntry, WalkWarning>>,
    stack: Vec<Frame>,
    last_ancestors: Vec<PathBuf>,
    pending_frame: Option<Frame>,
}

impl Walker {
    /// `sources` must come from [`normalise_sources`].
    pub fn new(sources: Vec<Source>, opts: WalkOptions) -> Walker {
        Walker {
            opts,
            sources: sources.into_iter(),
            queued: Default::default(),
            stack: Vec::new(),
            last_ancestors: Vec::new(),
            pending_frame: None,
        }
    }

    fn open_frame(&mut self, src: PathBuf, rel: PathBuf, dev: u64) -> Result<(), WalkWarning> {
        let rd = fs::read_dir(&src).map_err(|error| WalkWarning { path: src.clone(), error })?;
        let mut names = Vec::new();
        for e in rd {
            match e {
                Ok(e) => names.push(e.file_name()),
                Err(error) => return Err(WalkWarning { path: src.clone(), error }),
            }
        }
        names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        // The directory itself is emitted first; its children follow on later calls.
        self.pending_frame = Some(Frame { src, rel, dev, names });
        Ok(())
    }

    /// Emits `meta` for a directory and arranges to walk it unless excluded by policy.
    fn enter(&mut self, src: PathBuf, rel: PathBuf, meta: Metadata, parent_dev: Option<u64>) -> Result<WalkEntry, WalkWarning> {
        let other_fs = self.opts.one_file_system && parent_dev.is_some_and(|d| d != meta.dev());
        if !other_fs {
            if let Err(w) = self.open_frame(src.clone(), rel.clone(), meta.dev()) {
                self.queued.push_back(Err(w));
            }
        }
        Ok(WalkEntry { src, rel, meta, not_descended: other_fs })
    }

    fn start_source(&mut self, s: Source) {
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
            match fs::symlink_metadata(a) {
                Ok(meta) => self.queued.push_back(Ok(WalkEntry { src: a.clone(), rel: r.clone(), meta, not_descended: true })),
                Err(error) => self.queued.push_back(Err(WalkWarning { path: a.clone(), error })),
            }
        }
        self.last_ancestors = ancestors.into_iter().map(|(_, r)| r).collect();
        match fs::symlink_metadata(&s.abs) {
            Ok(meta) if meta.is_dir() => {
                let e = self.enter(s.abs, s.rel, meta, None);
                // The entry goes before any warning `enter` queued about reading it.
                let warnings: Vec<_> = self.queued.drain(..).collect();
                let (ancestors, rest): (Vec<_>, Vec<_>) = warnings.into_iter().partition(|w| w.is_ok());
                self.queued.extend(ancestors);
                self.queued.push_back(e);
                self.queued.extend(rest);
            }
            Ok(meta) => self.queued.push_back(Ok(WalkEntry { src: s.abs, rel: s.rel, meta, not_descended: false })),
            Err(error) => self.queued.push_back(Err(WalkWarning { path: s.abs, error })),
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
                let dev = frame.dev;
                let meta = match fs::symlink_metadata(&src) {
                    Ok(m) => m,
                    // Vanished since the directory was read: nothing to back up.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Some(Err(WalkWarning { path: src, error })),
                };
                let is_dir = meta.is_dir();
                if self.opts.excludes.matches(&rel, is_dir) {
                    continue;
                }
                if is_dir {
                    if self.opts.skip.contains(&src) {
                        continue;
                    }
                    if self.opts.exclude_caches && has_cachedir_tag(&src) {
                        continue;
                    }
                    return Some(self.enter(src, rel, meta, Some(dev)));
                }
                return Some(Ok(WalkEntry { src, rel, meta, not_descended: false }));
            }
            let s = self.sources.next()?;
            self.start_source(s);
        }
    }
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
