//! Crash safety: every header update is interrupted after each of its writes (cleanly, and
//! with the interrupted write torn in half); afterwards the device must still load, and a
//! passphrase valid before or after the update must still open it.

use offdisk::luks::io::MemDevice;
use offdisk::luks::{update, FormatOptions, PbkdfOptions, PbkdfType, Volume};
use offdisk::secret::Passphrase;

fn fast() -> PbkdfOptions {
    PbkdfOptions { kind: PbkdfType::Pbkdf2, force_iterations: Some(1000), ..PbkdfOptions::default() }
}

fn p(s: &str) -> Passphrase {
    Passphrase::from_slice(s.as_bytes())
}

/// A formatted 17 MiB in-memory volume with "old" in slot 0 and "other" in slot 1.
fn base() -> Vec<u8> {
    let dev = MemDevice::new(vec![0u8; 17 << 20]);
    let opts = FormatOptions { pbkdf: fast(), sector_size: Some(512), ..FormatOptions::default() };
    let vol = offdisk::luks::format_io(&dev, &opts, &p("old")).unwrap();
    update::add_key(&dev, &vol, &p("old"), &p("other"), None, &fast()).unwrap();
    dev.into_inner()
}

type Op = fn(&MemDevice, &Volume) -> Result<(), offdisk::luks::LuksError>;

/// Runs `op` with a crash after 0, 1, 2, ... writes until it completes; after each crash
/// the device must load and `check` must hold.
fn interrupt_everywhere(name: &str, op: Op, check: fn(&MemDevice, &Volume) -> bool) {
    let image = base();
    for tear in [false, true] {
        let mut n = 0;
        loop {
            let dev = MemDevice::new(image.clone());
            let vol = Volume::load_io(&dev).unwrap();
            dev.fail_after(n);
            dev.tear.set(tear);
            let done = op(&dev, &vol).is_ok();
            let after = Volume::load_io(&dev).unwrap_or_else(|e| panic!("{name}: crash after {n} writes (torn: {tear}) left no valid header: {e}"));
            assert!(check(&dev, &after), "{name}: crash after {n} writes (torn: {tear}) lost the key");
            dev.heal();
            // The next write repairs whatever the crash left.
            let repaired = update::repair(&dev, &after).unwrap();
            let st = repaired.luks2("test").unwrap();
            assert!(st.primary_ok && st.secondary_ok && st.problems.is_empty(), "{name}: {:?}", st.problems);
            if done {
                assert!(n >= 2, "{name}: an update needs at least two header writes");
                break;
            }
            n += 1;
        }
    }
}

fn opens(dev: &MemDevice, vol: &Volume, pass: &str) -> bool {
    vol.unlock_io(dev, &p(pass), None).is_ok()
}

#[test]
fn add_key_is_crash_safe() {
    interrupt_everywhere(
        "add-key",
        |d, v| update::add_key(d, v, &p("old"), &p("new"), None, &fast()).map(|_| ()),
        |d, v| opens(d, v, "old") && opens(d, v, "other"),
    );
}

#[test]
fn change_key_is_crash_safe() {
    interrupt_everywhere(
        "change-key",
        |d, v| update::change_key(d, v, &p("old"), &p("new"), None, &fast()).map(|_| ()),
        |d, v| (opens(d, v, "old") || opens(d, v, "new")) && opens(d, v, "other"),
    );
}

#[test]
fn kill_and_remove_are_crash_safe() {
    interrupt_everywhere("kill-slot", |d, v| update::kill_slot(d, v, 0), |d, v| opens(d, v, "other"));
    interrupt_everywhere("remove-key", |d, v| update::remove_key(d, v, &p("other")).map(|_| ()), |d, v| opens(d, v, "old"));
}

#[test]
fn a_damaged_copy_is_recovered_and_repaired_by_the_next_write() {
    for damage_at in [100u64, 4096 + 10, (16 << 10) + 100, (16 << 10) + 4096 + 10] {
        let dev = MemDevice::new(base());
        dev.data.borrow_mut()[damage_at as usize] ^= 0x55;
        let vol = Volume::load_io(&dev).unwrap();
        let st = vol.luks2("test").unwrap();
        assert!(!(st.primary_ok && st.secondary_ok), "damage at {damage_at} unnoticed");
        assert!(st.problems.iter().any(|m| m.contains("checksum") || m.contains("magic")), "{:?}", st.problems);
        assert!(opens(&dev, &vol, "old"));
        update::add_key(&dev, &vol, &p("other"), &p("third"), None, &fast()).unwrap();
        let vol = Volume::load_io(&dev).unwrap();
        let st = vol.luks2("test").unwrap();
        assert!(st.primary_ok && st.secondary_ok && st.problems.is_empty(), "{:?}", st.problems);
        assert!(opens(&dev, &vol, "third"));
    }
}

/// header-restore interrupted after each of its writes (cleanly and torn): the disk opens
/// with exactly the passphrases it had before the restore, or exactly the backup's — never
/// with neither. (The backup's keyslot areas must not overwrite the live keyslots while the
/// live header still points at them.)
#[test]
fn header_restore_is_crash_safe() {
    use offdisk::luks::backup::{apply_restore, header_backup, plan_restore};
    // The backup holds "old" and "other"; then "old" becomes "new" and "other" goes.
    let dev = MemDevice::new(base());
    let vol = Volume::load_io(&dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bak = dir.path().join("header.bak");
    header_backup(&dev, &vol, &bak).unwrap();
    update::change_key(&dev, &vol, &p("old"), &p("new"), None, &fast()).unwrap();
    let vol = Volume::load_io(&dev).unwrap();
    update::remove_key(&dev, &vol, &p("other")).unwrap();
    let image = dev.into_inner();
    for tear in [false, true] {
        let mut n = 0;
        loop {
            let dev = MemDevice::new(image.clone());
            let plan = plan_restore(&dev, &bak).unwrap();
            dev.fail_after(n);
            dev.tear.set(tear);
            let done = apply_restore(&dev, &plan).is_ok();
            let after = Volume::load_io(&dev).unwrap_or_else(|e| panic!("crash after {n} writes (torn: {tear}) left no valid header: {e}"));
            let set: Vec<&str> = ["old", "other", "new"].into_iter().filter(|k| opens(&dev, &after, k)).collect();
            assert!(set == ["new"] || set == ["old", "other"], "crash after {n} writes (torn: {tear}): opens with {set:?}");
            if done {
                assert_eq!(set, ["old", "other"]);
                break;
            }
            n += 1;
        }
    }
}
