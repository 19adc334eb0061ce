//! Reading backup-disk images without root, device-mapper or mounting (`--from`): disks
//! made with cryptsetup and mkfs.ext4 (LUKS1 and LUKS2, every cipher, 512- and 4096-byte
//! sectors, ext4 features on and off, GPT whole disks and bare partitions), read as the
//! unprivileged user nobody. What is listed, verified and restored must equal the tree that
//! was backed up; damage must be named, never a panic. (The kernel comparison — dm-crypt
//! and a real mount against the same images — is tests/vm/t-anywhere.sh.)

#[path = "anywhere_support/mod.rs"]
mod anywhere_support;
#[path = "backup_support/mod.rs"]
mod backup_support;

use anywhere_support::{build, data_block_of, unprivileged, Image, Spec};
use backup_support::{assert_same_tree, bin, is_root, make_rich_tree, offdisk_ok, set_mtime, snapshot, Snap};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

struct Case {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    img: Image,
    work: PathBuf,
}

/// A backup of a rich tree, made by `offdisk backup`, on a disk image of `spec`.
fn case(spec: &Spec) -> Case {
    case_with(spec, |_| {})
}

/// As [`case`], with `more` added to the rich tree before the backup.
fn case_with(spec: &Spec, more: impl Fn(&Path)) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = tmp.path().join("src");
    make_rich_tree(&src);
    more(&src);
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    offdisk_ok(&["backup", "--no-progress", "--target", root.to_str().unwrap(), src.to_str().unwrap()]);
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let img = build(spec, &root, &work);
    for p in [&work, &img.path, &img.key_file] {
        fs::set_permissions(p, fs::Permissions::from_mode(if p.is_dir() { 0o777 } else { 0o644 })).unwrap();
    }
    Case { _tmp: tmp, src, img, work }
}

/// offdisk as nobody, reading the image.
fn from(c: &Case, args: &[&str]) -> Output {
    let mut cmd = unprivileged(&bin());
    let sub = args[0];
    cmd.arg(sub).arg("--from").arg(&c.img.path).arg("--key-file").arg(&c.img.key_file).args(&args[1..]);
    cmd.env("OFFDISK_CONFIG", "/nonexistent/offdisk.toml").output().unwrap()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: exit {:?}\n{}\n{}", o.status.code(), String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What restoring as nobody can reproduce: owners become the restoring user, set-id bits
/// are dropped by default, and mkfs.ext4 -d (1.47.0) keeps whole seconds only.
fn as_restored(mut s: BTreeMap<Vec<u8>, Snap>, root_restore: bool) -> BTreeMap<Vec<u8>, Snap> {
    for v in s.values_mut() {
        v.mtime.1 = 0;
        if !root_restore {
            v.uid = 0;
            v.gid = 0;
            v.mode &= !0o6000;
        }
    }
    s
}

fn full_check(spec: &Spec) {
    let c = case(spec);
    let what = format!("{spec:?}");
    // generations: the one generation, with its counts.
    let out = ok(&from(&c, &["generations", "--json"]), &what);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let name = list[0]["name"].as_str().unwrap().to_string();
    assert_eq!(list.as_array().unwrap().len(), 1, "{what}");
    assert!(list[0]["files"].as_u64().unwrap() > 5, "{what}: {out}");
    // ls: names as they were on the host, symlink targets shown.
    let src_s = c.src.to_str().unwrap();
    let out = ok(&from(&c, &["ls", &format!("{src_s}/dir")]), &what);
    assert!(out.contains(&format!("{src_s}/dir/symlink -> ../plain.txt")), "{what}: {out}");
    assert!(out.lines().any(|l| l.starts_with("drwx") && l.ends_with(&format!("{src_s}/dir/sub"))), "{what}: {out}");
    // verify: all good, contents read.
    let o = from(&c, &["verify"]);
    ok(&o, &what);
    assert!(String::from_utf8_lossy(&o.stderr).contains("all good"), "{what}");
    // restore as nobody: the tree as backed up.
    let dest = c.work.join("dest");
    let o = from(&c, &["restore", "--generation", &name, src_s, "--to", dest.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    // Dropping set-id bits is the one warning (exit 1 says the restore was not exact).
    assert!(stderr.contains("set-user/group-ID bits dropped"), "{what}: {stderr}");
    assert_eq!(o.status.code(), Some(1), "{what}: {stderr}");
    let mut got = snapshot(&dest.join(c.src.strip_prefix("/").unwrap()));
    for v in got.values_mut() {
        v.uid = 0;
        v.gid = 0;
    }
    assert_same_tree(&got, &as_restored(snapshot(&c.src), false), &what);
}

#[test]
fn luks2_xts512_4k_sectors_gpt_disk_default_ext4() {
    full_check(&Spec { luks: "luks2", cipher: "aes-xts-plain64", key_bits: 512, sector: 4096, gpt: true, mkfs: &[] });
}

#[test]
fn luks1_cbc_essiv_partition_no_csum_32bit_inline_data() {
    full_check(&Spec { luks: "luks1", cipher: "aes-cbc-essiv:sha256", key_bits: 256, sector: 512, gpt: false, mkfs: &["-O", "^metadata_csum,^64bit,inline_data"] });
}

#[test]
fn luks2_xts256_512_sectors_ext3_block_maps() {
    full_check(&Spec {
        luks: "luks2",
        cipher: "aes-xts-plain64",
        key_bits: 256,
        sector: 512,
        gpt: true,
        mkfs: &["-O", "^extents,^64bit,^flex_bg,^huge_file,^metadata_csum,^dir_nlink", "-I", "256"],
    });
}

#[test]
fn luks1_xts_and_luks2_cbc_plain64_meta_bg() {
    full_check(&Spec { luks: "luks1", cipher: "aes-xts-plain64", key_bits: 512, sector: 512, gpt: false, mkfs: &["-O", "meta_bg,^resize_inode"] });
    full_check(&Spec { luks: "luks2", cipher: "aes-cbc-plain64", key_bits: 128, sector: 2048, gpt: false, mkfs: &["-b", "4096"] });
}

fn default_case() -> Case {
    case(&Spec { luks: "luks2", cipher: "aes-xts-plain64", key_bits: 512, sector: 4096, gpt: true, mkfs: &[] })
}

#[test]
fn root_restore_keeps_owners_and_setid_when_asked() {
    if !is_root() {
        eprintln!("skipped: needs root to restore owners");
        return;
    }
    let c = default_case();
    let dest = c.work.join("dest");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["restore", "--keep-setid", "--from"]).arg(&c.img.path).arg("--key-file").arg(&c.img.key_file);
    let o = cmd.arg(&c.src).arg("--to").arg(&dest).output().unwrap();
    ok(&o, "root restore");
    let got = snapshot(&dest.join(c.src.strip_prefix("/").unwrap()));
    assert_same_tree(&got, &as_restored(snapshot(&c.src), true), "root restore");
}

#[test]
fn flipped_ciphertext_byte_in_a_file_is_named_by_verify_and_restore() {
    let c = default_case();
    let gen_dir = fs::read_dir(c.work.parent().unwrap().join("root/generations")).unwrap().next().unwrap().unwrap().file_name();
    let rel = format!("generations/{}/tree{}/dir/sub/deep.bin", gen_dir.to_string_lossy(), c.src.display());
    let off = data_block_of(&c.img, rel.as_bytes()) + 100;
    let f = fs::OpenOptions::new().write(true).read(true).open(&c.img.path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], off).unwrap();
    let o = from(&c, &["verify"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let want = format!("damaged: {}/tree{}/dir/sub/deep.bin (content does not match its checksum)", gen_dir.to_string_lossy(), c.src.display());
    assert_eq!(out.trim(), want, "exactly that file is named");
    let dest = c.work.join("dest");
    let o = from(&c, &["restore", c.src.to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("dir/sub/deep.bin: content does not match the generation's checksum"), "{err}");
}

#[test]
fn damaged_filesystem_and_wrong_passphrase_are_clear_errors() {
    let c = default_case();
    // Wrong passphrase: exit 2, as cryptsetup.
    let bad_key = c.work.join("bad-key");
    fs::write(&bad_key, b"wrong").unwrap();
    fs::set_permissions(&bad_key, fs::Permissions::from_mode(0o644)).unwrap();
    let o = unprivileged(&bin()).args(["generations", "--from"]).arg(&c.img.path).arg("--key-file").arg(&bad_key).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no key available with this passphrase"));
    // Not a backup disk at all.
    let o = unprivileged(&bin()).args(["generations", "--key-file"]).arg(&c.img.key_file).arg("--from").arg(&c.img.fs_image).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no LUKS volume found"), "{}", String::from_utf8_lossy(&o.stderr));
    // The superblock's ciphertext damaged: the superblock checksum says so.
    let f = fs::OpenOptions::new().write(true).open(&c.img.path).unwrap();
    f.write_all_at(&[0x5a; 16], c.img.data_offset + 1024 + 64).unwrap();
    let o = from(&c, &["generations"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("damaged ext4 filesystem: superblock checksum mismatch") && err.contains("hint:"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn restore_never_follows_what_is_in_dest() {
    let c = default_case();
    let dest = c.work.join("dest");
    let outside = c.work.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o777)).unwrap();
    let inside = dest.join(c.src.strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    // A symlink where a directory goes, and one where a file goes.
    std::os::unix::fs::symlink(&outside, inside.join("dir")).unwrap();
    fs::write(outside.join("victim"), b"untouched").unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), inside.join("plain.txt")).unwrap();
    let chown = |p: &Path| {
        if is_root() {
            std::os::unix::fs::lchown(p, Some(65534), Some(65534)).unwrap();
        }
    };
    for p in [dest.as_path(), inside.as_path()] {
        let mut a = p.to_path_buf();
        while a != c.work {
            chown(&a);
            a.pop();
        }
    }
    let o = from(&c, &["restore", c.src.to_str().unwrap(), "--to", dest.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0));
    assert!(err.contains("/dir: is a symbolic link, not a directory; not followed"), "{err}");
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"untouched");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "nothing made outside DEST");
    // The file-name symlink is DEST's own: left alone (as the host restore does), neither
    // written through nor replaced.
    assert!(err.contains("/plain.txt: exists, not overwritten"), "{err}");
    assert!(fs::symlink_metadata(inside.join("plain.txt")).unwrap().file_type().is_symlink());
    // A restore path through a symlink stored in the generation is refused.
    let through = format!("{}/dir/symlink/x", c.src.display());
    let o = from(&c, &["restore", &through, "--to", dest.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("runs through a symlink stored in the generation"), "{}", String::from_utf8_lossy(&o.stderr));
}


#[test]
fn restore_with_one_or_four_workers_gives_the_same_tree_and_words() {
    // Many small files over several directories (each worker takes files of its own), a
    // read-only directory holding files and directories with set times: what the workers
    // write must all be in place before a directory gets its mode and times.
    let c = case_with(&Spec { luks: "luks2", cipher: "aes-xts-plain64", key_bits: 512, sector: 4096, gpt: false, mkfs: &[] }, |src| {
        for d in 0..6u32 {
            let dir = src.join(format!("many/d{d}"));
            fs::create_dir_all(&dir).unwrap();
            for i in 0..60u32 {
                let body: Vec<u8> = (0..(i * 97 + d * 13) % 9000).map(|b| (b ^ i ^ d) as u8).collect();
                fs::write(dir.join(format!("f{i}")), body).unwrap();
            }
            set_mtime(&dir, 1_500_000_000 + u64::from(d), 5);
        }
        fs::write(src.join("many/big"), vec![7u8; 3 << 20]).unwrap();
        let ro = src.join("many/readonly-dir");
        fs::create_dir(&ro).unwrap();
        for i in 0..20 {
            fs::write(ro.join(format!("r{i}")), format!("read-only {i}\n")).unwrap();
        }
        set_mtime(&ro, 1_400_000_000, 7);
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime(&src.join("many"), 1_450_000_000, 9);
    });
    let src_s = c.src.to_str().unwrap();
    let mut trees = Vec::new();
    let mut words = Vec::new();
    for threads in ["1", "4"] {
        let dest = c.work.join(format!("dest-{threads}"));
        let o = from(&c, &["restore", "--threads", threads, src_s, "--to", dest.to_str().unwrap()]);
        // The set-id bits dropped are the one warning, whatever the number of workers.
        assert_eq!(o.status.code(), Some(1), "--threads {threads}: {}", String::from_utf8_lossy(&o.stderr));
        let shown = |b: &[u8]| String::from_utf8_lossy(b).replace(dest.to_str().unwrap(), "DEST");
        words.push((shown(&o.stdout), shown(&o.stderr)));
        let got = snapshot(&dest.join(c.src.strip_prefix("/").unwrap()));
        fs::set_permissions(dest.join(c.src.strip_prefix("/").unwrap()).join("many/readonly-dir"), fs::Permissions::from_mode(0o755)).ok();
        trees.push(got);
    }
    assert_eq!(words[0], words[1], "the same summary and warnings, in the same order");
    assert!(words[0].0.contains("files"), "{:?}", words[0]);
    assert_same_tree(&trees[0], &trees[1], "--threads 1 and --threads 4");
    // Owners become the restoring user (nobody when the test runs as root).
    let mut got = trees.pop().unwrap();
    for v in got.values_mut() {
        (v.uid, v.gid) = (0, 0);
    }
    assert_same_tree(&got, &as_restored(snapshot(&c.src), false), "--threads 4 against the source");
    fs::set_permissions(c.src.join("many/readonly-dir"), fs::Permissions::from_mode(0o755)).unwrap();
}
