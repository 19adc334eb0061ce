//! The Debian package `scripts/build-deb.sh` makes (from the binary these tests built, not a
//! release build): every file offdisk installs is in it, the maintainer scripts reload udev
//! and systemd, /etc files are conffiles, Depends names the runtime tools, and lintian finds
//! no error. Needs dpkg-dev, binutils and lintian (tests/deps.sh installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/deps.sh installs dpkg-dev, binutils and lintian)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn build(out: &Path) -> PathBuf {
    let text = run(Command::new("bash")
        .arg(repo().join("scripts/build-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_offdisk"), "--out"])
        .arg(out));
    let deb = PathBuf::from(text.lines().last().unwrap().trim());
    let version = env!("CARGO_PKG_VERSION");
    assert!(deb.file_name().unwrap().to_str().unwrap().starts_with(&format!("offdisk_{version}_")), "{deb:?}");
    assert!(deb.exists(), "{text}");
    deb
}

fn field<'a>(control: &'a str, name: &str) -> &'a str {
    control.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_else(|| panic!("no {name} in\n{control}"))
}

#[test]
fn the_debian_package_holds_every_file_and_passes_lintian() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build(dir.path());

    // Every file: the binary, hot-plug pieces, each man page in its section, completions, docs.
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let files: Vec<&str> = contents.lines().filter(|l| l.starts_with('-')).filter_map(|l| l.split_whitespace().last()).collect();
    let mut want: Vec<String> = [
        "./usr/bin/offdisk",
        "./usr/lib/udev/rules.d/99-offdisk.rules",
        "./usr/lib/systemd/system/offdisk-dock@.service",
        "./usr/lib/systemd/user/offdisk-agent.service",
        "./usr/lib/tmpfiles.d/offdisk.conf",
        "./etc/xdg/autostart/offdisk-agent.desktop",
        "./etc/offdisk/config.toml",
        "./usr/share/bash-completion/completions/offdisk",
        "./usr/share/zsh/vendor-completions/_offdisk",
        "./usr/share/fish/vendor_completions.d/offdisk.fish",
        "./usr/share/doc/offdisk/copyright",
        "./usr/share/doc/offdisk/changelog.gz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for e in std::fs::read_dir(repo().join("man")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let section = name.rsplit('.').next().unwrap().to_string();
        want.push(format!("./usr/share/man/man{section}/{name}.gz"));
    }
    let missing: Vec<&String> = want.iter().filter(|w| !files.contains(&w.as_str())).collect();
    assert!(missing.is_empty(), "not in the package: {missing:?}\n{contents}");
    assert!(contents.lines().all(|l| l.contains(" root/root ")), "every file is root's:\n{contents}");

    // Control: Depends on the libraries and the runtime tools; conffiles; maintainer scripts.
    let ctl = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&ctl));
    let control = std::fs::read_to_string(ctl.join("control")).unwrap();
    assert_eq!(field(&control, "Package"), "offdisk");
    assert_eq!(field(&control, "Version"), env!("CARGO_PKG_VERSION"));
    let depends = field(&control, "Depends");
    for dep in ["libc6", "e2fsprogs", "udev", "kmod", "keyutils", "pinentry"] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }
    let conffiles = std::fs::read_to_string(ctl.join("conffiles")).unwrap();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), ["/etc/offdisk/config.toml", "/etc/xdg/autostart/offdisk-agent.desktop"]);
    for script in ["postinst", "postrm"] {
        let text = std::fs::read_to_string(ctl.join(script)).unwrap();
        assert!(text.contains("udevadm control --reload") && text.contains("systemctl daemon-reload"), "{script} does not reload udev and systemd:\n{text}");
        // The per-disk udisks rules `offdisk register` writes are the admin's (unregister removes them).
        assert!(!text.contains("/etc/udev") && !text.contains("90-offdisk"), "{script} touches the admin's udev rules:\n{text}");
    }
    let md5sums = std::fs::read_to_string(ctl.join("md5sums")).unwrap();
    assert_eq!(md5sums.lines().count(), files.len(), "md5sums lists every file");

    // The shipped config loads, and says nothing is registered yet.
    let x = dir.path().join("x");
    run(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&x));
    let status = run(Command::new(env!("CARGO_BIN_EXE_offdisk")).args(["status", "--config"]).arg(x.join("etc/offdisk/config.toml")));
    assert!(status.contains("No backup disks registered"), "{status}");

    // lintian: no errors (warnings are reported in the output, not failures).
    let out = Command::new("lintian").args(["--tag-display-limit", "0", "--fail-on", "error"]).arg(&deb).output().expect("lintian (apt-get install lintian)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.lines().any(|l| l.starts_with("E: ")), "lintian errors:\n{text}");
    eprintln!("lintian: {}", if text.trim().is_empty() { "clean".into() } else { text });
}
