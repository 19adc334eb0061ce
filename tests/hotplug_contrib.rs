//! The files under contrib/: what the udev rule and the units say, that systemd accepts the
//! units (when systemd-analyze is there), and that the install script puts everything in place.

use std::path::Path;
use std::process::Command;

fn contrib(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(name)).unwrap()
}

fn rule_lines() -> Vec<String> {
    // Join continuation lines, drop comments.
    contrib("99-offdisk.rules").replace("\\\n", "").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

#[test]
fn udev_rule_wants_the_unit_for_luks_adds_only_and_runs_nothing() {
    let lines = rule_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let r = &lines[0];
    for needed in [r#"ACTION=="add""#, r#"SUBSYSTEM=="block""#, r#"ENV{ID_FS_TYPE}=="crypto_LUKS""#, r#"TAG+="systemd""#, r#"ENV{SYSTEMD_WANTS}+="offdisk-dock@%k.service""#] {
        assert!(r.contains(needed), "rule lacks {needed}: {r}");
    }
    assert!(!r.contains("RUN"), "no program runs inside udev");
    // Only the kernel name is substituted; no attribute or property reaches the unit name.
    assert!(!r.contains("$attr") && !r.contains("%s{") && !r.contains("$env"), "{r}");
}

#[test]
fn dock_unit_runs_dock_on_the_raw_instance_with_hardening() {
    let u = contrib("offdisk-dock@.service");
    assert!(u.lines().any(|l| l == "ExecStart=/usr/bin/offdisk dock --plugged %i"), "raw %i, not %I (which would turn dm-3 into dm/3); --plugged: a plug-in event");
    // A pull the dock handled (stopped by SIGTERM, everything closed: exit 143) is no failure;
    // nothing else is made a success.
    assert!(u.lines().any(|l| l == "SuccessExitStatus=143"), "a handled pull must not leave the unit failed");
    assert_eq!(u.lines().filter(|l| l.starts_with("SuccessExitStatus=")).count(), 1);
    for needed in ["Type=oneshot", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateNetwork=yes", "BindsTo=dev-%i.device", "IPAddressDeny=any", "RestrictNamespaces=yes", "ProtectKernelModules=yes", "TimeoutStopSec=3min"] {
        assert!(u.lines().any(|l| l == needed), "unit lacks {needed}");
    }
    // udev completes dm cookies through semaphores in the host's IPC namespace; busy-disk
    // reports need to see every process.
    for never in ["PrivateIPC=yes", "ProtectProc=invisible", "PrivateDevices=yes"] {
        assert!(!u.lines().any(|l| l == never), "unit must not set {never}");
    }
    let agent = contrib("offdisk-agent.service");
    assert!(agent.contains("ExecStart=/usr/bin/offdisk agent") && agent.contains("WantedBy=graphical-session.target"));
    let desktop = contrib("offdisk-agent.desktop");
    assert!(desktop.starts_with("[Desktop Entry]") && desktop.contains("Exec=/usr/bin/offdisk agent"));
}

#[test]
fn systemd_accepts_the_units() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze not installed; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_offdisk");
    for (name, text) in [("offdisk-dock@.service", contrib("offdisk-dock@.service")), ("offdisk-agent.service", contrib("offdisk-agent.service"))] {
        let p = dir.path().join(name);
        std::fs::write(&p, text.replace("/usr/bin/offdisk", bin)).unwrap();
        let target = if name.contains('@') { dir.path().join("offdisk-dock@sdb1.service") } else { p.clone() };
        if target != p {
            std::os::unix::fs::symlink(&p, &target).unwrap();
        }
        let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&target).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Only complaints about this host's units (none for ours) may appear.
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("offdisk")).collect();
        assert!(ours.is_empty(), "{name}: {err}");
    }
}

#[test]
fn install_script_puts_everything_in_place() {
    let dest = tempfile::tempdir().unwrap();
    let bindir = dest.path().join("usr/bin");
    std::fs::create_dir_all(&bindir).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_offdisk"), bindir.join("offdisk")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/install.sh");
    let out = Command::new("sh").arg(&script).env("DESTDIR", dest.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "usr/lib/udev/rules.d/99-offdisk.rules",
        "usr/lib/systemd/system/offdisk-dock@.service",
        "usr/lib/systemd/user/offdisk-agent.service",
        "usr/lib/tmpfiles.d/offdisk.conf",
        "etc/xdg/autostart/offdisk-agent.desktop",
        "usr/share/man/man8/offdisk-dock.8",
        "usr/share/man/man8/offdisk-register.8",
        "usr/share/man/man1/offdisk-agent.1",
        "usr/share/bash-completion/completions/offdisk",
        "usr/share/zsh/vendor-completions/_offdisk",
        "usr/share/fish/vendor_completions.d/offdisk.fish",
    ] {
        let p = dest.path().join(f);
        assert!(p.metadata().map(|m| m.len() > 0).unwrap_or(false), "{f} missing or empty");
    }
    assert!(!dest.path().join("usr/share/man/man8/offdisk-agent.8").exists(), "the agent's page is section 1");
    let dock_page = std::fs::read_to_string(dest.path().join("usr/share/man/man8/offdisk-dock.8")).unwrap();
    assert!(dock_page.contains("SECURITY"), "the hand-written dock page wins over the generated one");
    let bash = std::fs::read_to_string(dest.path().join("usr/share/bash-completion/completions/offdisk")).unwrap();
    assert!(bash.contains("dock") && bash.contains("register") && bash.contains("agent"));
}
