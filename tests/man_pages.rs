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
