//! `offdisk init` registers the disk it makes: the registration step it runs on the new,
//! mounted filesystem (`register_mounted`), and the command line that asks for it. Making
//! the disk itself needs a kernel with device-mapper: tests/vm/t-03-init.sh.

use offdisk::hotplug::identity::{self, HostKey};
use offdisk::hotplug::register::{register_mounted, RegisterSpec};
use offdisk::hotplug::{registry, HotplugError};
use std::path::Path;
use std::process::{Command, Stdio};

const UUID: &str = "5D2F3C4A-1B2C-4D5E-8F90-A1B2C3D4E5F6";

fn offdisk(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_offdisk")).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn registering_a_mounted_disk_writes_the_record_and_the_config_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (config, host_key, mount, src) = (dir.path().join("config.toml"), dir.path().join("host.key"), dir.path().join("mnt"), dir.path().join("src"));
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    let spec = RegisterSpec { sources: vec![src.clone()], excludes: vec!["*.tmp".into()], ..Default::default() };

    let reg = register_mounted(&config, &host_key, UUID, Some("OFFSITE1"), &mount, &spec).unwrap().reg;

    // The config holds the disk, by lower-case UUID, named by the header's label.
    let regs = registry::load(&config).unwrap();
    let found = registry::find(&regs, UUID).expect("registered");
    assert_eq!(found.luks_uuid, UUID.to_ascii_lowercase());
    assert_eq!(found.name(), "OFFSITE1");
    assert_eq!(found.sources, vec![src]);
    assert_eq!(found.excludes, vec!["*.tmp".to_string()]);
    assert_eq!(found.unlock.as_str(), "passphrase");
    // Its identity is the disk id of the record now inside the filesystem, which checks out.
    let disk_id = found.identity.clone().expect("identity recorded");
    assert_eq!(reg.identity.as_deref(), Some(disk_id.as_str()));
    let key = HostKey::load_or_create(&host_key).unwrap();
    identity::check(&mount, &key, UUID, &disk_id).unwrap();
    assert!(identity::check(&mount, &key, UUID, &identity::new_disk_id()).is_err(), "another disk id must not check out");
    // The config loads for the backup engine too.
    let cfg = offdisk::config::Config::load(&config).unwrap();
    assert_eq!(cfg.disks.len(), 1);

    // A second registration of the same disk is refused without touching the config.
    let before = std::fs::read_to_string(&config).unwrap();
    let again = register_mounted(&config, &host_key, UUID, Some("OFFSITE1"), &mount, &spec);
    assert!(matches!(again, Err(HotplugError::AlreadyRegistered(_))), "{again:?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
}

#[test]
fn init_writes_the_udisks_rule_for_the_disk_it_registers() {
    let dir = tempfile::tempdir().unwrap();
    let (config, mount, rules) = (dir.path().join("config.toml"), dir.path().join("mnt"), dir.path().join("rules.d"));
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    let rule_dir = offdisk::hotplug::udisks_rule::RuleDir { dir: rules.clone(), reload: false };
    let spec = RegisterSpec { sources: vec![dir.path().into()], udev_rules: Some(rule_dir), ..Default::default() };
    register_mounted(&config, &dir.path().join("host.key"), UUID, Some("OFFSITE1"), &mount, &spec).unwrap();
    let lower = UUID.to_ascii_lowercase();
    let text = std::fs::read_to_string(rules.join(format!("90-offdisk-{lower}.rules"))).unwrap();
    assert!(text.contains(&format!("ENV{{ID_FS_UUID}}==\"{lower}|{UUID}\"")) && text.contains("ENV{UDISKS_AUTO}=\"0\""), "{text}");
}

#[test]
fn unregister_of_an_unknown_disk_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let (rc, out) = offdisk(&["unregister", "--config", s(&config), "NOPE"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("NOPE is not registered") && out.contains("offdisk register"), "{out}");
    assert!(!config.exists());
}

#[test]
fn init_without_sources_is_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse").unwrap();
    let config = dir.path().join("config.toml");

    let (rc, out) = offdisk(&["init", "--batch", "--key-file", s(&pw), "--label", "T", "--config", s(&config), s(&img)]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("--source") && out.contains("--no-register"), "{out}");
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0), "the image was written");
    assert!(!config.exists(), "the config was written");

    // --no-register and registration options contradict each other.
    let (rc, out) = offdisk(&["init", "--batch", "--key-file", s(&pw), "--label", "T", "--no-register", "--source", s(dir.path()), s(&img)]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("--no-register"), "{out}");
}

#[test]
fn init_and_luks_format_share_cryptsetups_format_options() {
    for cmd in [&["init"][..], &["luks", "format"][..]] {
        let (rc, help) = offdisk(&[cmd, &["--help"]].concat());
        assert_eq!(rc, 0);
        for opt in ["-c, --cipher", "-s, --key-size", "--hash", "--pbkdf ", "-i, --iter-time", "--pbkdf-memory", "--pbkdf-parallel", "--pbkdf-force-iterations", "--sector-size", "--uuid", "--subsystem"] {
            assert!(help.contains(opt), "{cmd:?} lacks {opt}:\n{help}");
        }
        assert!(help.contains("[default: aes-xts-plain64]") && help.contains("[default: 512]") && help.contains("[default: argon2id]"), "{help}");
    }
    // Registration options: the same names in init and register; the unattended key file
    // is --unlock-key-file in both (register also takes its older --key-file).
    let (_, init) = offdisk(&["init", "--help"]);
    let (_, register) = offdisk(&["register", "--help"]);
    for opt in ["--source", "--exclude", "--unlock-key-file", "--keep-last", "--keep-yearly", "--mount-point", "--config"] {
        assert!(init.contains(opt) && register.contains(opt), "{opt}");
    }
    assert!(register.contains("[alias: --key-file]") && register.contains("-s, --source"), "{register}");
    assert!(init.contains("-d, --key-file") && init.contains("--no-register"), "{init}");
}
