//! The man pages in `man/` are the ones the command line generates (regenerate with
//! `cargo run -- generate-man man`), every subcommand has a page, and the hand-written
//! pages exist.

use std::path::Path;

#[test]
fn generated_pages_match_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let written = offdisk::cli::write_man_pages(tmp.path()).unwrap();
    assert!(written.len() > 15, "too few pages generated: {written:?}");
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut stale = Vec::new();
    for name in &written {
        let fresh = std::fs::read(tmp.path().join(name)).unwrap();
        match std::fs::read(man.join(name)) {
            Ok(committed) if committed == fresh => {}
            _ => stale.push(name.clone()),
        }
    }
    assert!(stale.is_empty(), "out of date in man/ (run `cargo run -- generate-man man`): {stale:?}");
}

#[test]
fn every_subcommand_has_a_page() {
    use clap::CommandFactory;
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let cmd = offdisk::cli::Cli::command();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("offdisk-{}", sub.get_name());
        let found = ["8", "1"].iter().any(|sec| man.join(format!("{name}.{sec}")).exists());
        assert!(found, "no man page for {name}");
    }
    for page in ["offdisk-format.5", "offdisk.conf.5", "offdisk-agent.1", "offdisk-dock.8", "offdisk-luks.8"] {
        assert!(man.join(page).exists(), "missing {page}");
    }
}

/// Every page in man/ and what it refers to: `offdisk-x(N)` must be the page man/offdisk-x.N.
fn pages() -> Vec<(String, String)> {
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|n| {
            let text = std::fs::read_to_string(man.join(&n)).unwrap();
            (n, text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn pages_refer_only_to_pages_that_exist_in_their_sections() {
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut dangling = Vec::new();
    for (name, text) in pages() {
        // References look like offdisk\-backup(8) or \fBoffdisk\-backup\fR(8).
        let plain = text.replace("\\fB", "").replace("\\fR", "").replace("\\fI", "").replace("\\-", "-");
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("offdisk") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')).unwrap_or(tail.len());
            let (word, after) = tail.split_at(end);
            if let Some(sec) = after.strip_prefix('(').and_then(|a| a.split(')').next()) {
                if sec.len() == 1 && !man.join(format!("{word}.{sec}")).exists() {
                    dangling.push(format!("{name}: {word}({sec})"));
                }
            }
            rest = &tail[end.max(1)..];
        }
    }
    assert!(dangling.is_empty(), "references to pages that do not exist: {dangling:?}");
}

#[test]
fn synopsis_names_the_command_as_it_is_typed_with_its_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    offdisk::cli::write_man_pages(tmp.path()).unwrap();
    for (page, typed, args) in [
        ("offdisk-backup.8", "offdisk backup", &["--target DIR", "[SRC...]"][..]),
        ("offdisk-luks-format.8", "offdisk luks format", &["--key-file FILE", "IMAGE"][..]),
        ("offdisk-open.8", "offdisk open", &["--mount [DIR]", "TARGET"][..]),
        ("offdisk.8", "offdisk", &["COMMAND"][..]),
    ] {
        let text = std::fs::read_to_string(tmp.path().join(page)).unwrap().replace("\\-", "-");
        let synopsis = text.split(".SH SYNOPSIS\n").nth(1).and_then(|s| s.lines().next()).unwrap_or_default().to_string();
        assert!(synopsis.starts_with(&format!("\\fB{typed}\\fR ")), "{page}: {synopsis}");
        for a in args {
            assert!(synopsis.contains(a), "{page}: no {a} in {synopsis}");
        }
        assert_eq!(text.matches(".ds Aq").count(), 2, "{page}: one roff preamble");
    }
}
