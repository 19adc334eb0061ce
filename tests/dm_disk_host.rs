//! Host tier for the device-mapper and disk layers: the pure logic (crypt tables, DM UUIDs,
//! signature probing, GPT layout) checked against what cryptsetup, sfdisk and blkid say,
//! without a kernel that has device-mapper.

use offdisk::disk::{gpt, mkfs, mount, probe};
use offdisk::dm::table::{self, CryptFlags, KeyReference};
use offdisk::luks::{self, CryptSegment, Version};
use offdisk::secret::{Passphrase, VolumeKey};
use std::process::Command;

/// The host tools these tests compare against are test dependencies (tests/deps.sh installs
/// them); a missing one is a failure, not a skip.
fn have(tool: &str) -> bool {
    assert!(Command::new(tool).arg("--version").output().is_ok(), "{tool} is not installed (cryptsetup, fdisk, util-linux, e2fsprogs)");
    true
}

#[test]
fn luks2_volume_formatted_by_offdisk_gives_cryptsetups_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&img).unwrap();
    f.set_len(32 << 20).unwrap();
    let mut opts = luks::FormatOptions::default();
    opts.pbkdf.kind = luks::PbkdfType::Pbkdf2;
    opts.pbkdf.force_iterations = Some(1000);
    opts.sector_size = Some(512);
    opts.label = Some("HOSTTEST".into());
    let vol = luks::format(&f, &opts, &Passphrase::from_slice(b"pw")).unwrap();
    let seg = vol.crypt_segment().unwrap();
    let desc = table::keyring_description(vol.uuid(), seg.digest_id.unwrap());
    let t = table::crypt_table(&seg, &KeyReference::Keyring { description: desc, key_size: 64 }, (7, 3), 32 << 20, CryptFlags::default()).unwrap();
    assert_eq!(t.params_str(), format!("aes-xts-plain64 :64:logon:cryptsetup:{}-d0 0 7:3 32768", vol.uuid()));
    assert_eq!(t.length, (32 << 20) / 512 - 32768);

    // cryptsetup reads the same header the same way (offset and sector size).
    if have("cryptsetup") {
        let out = Command::new("cryptsetup").arg("luksDump").arg(&img).output().unwrap();
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(dump.contains(&format!("offset: {} [bytes]", seg.offset)), "{dump}");
        assert!(dump.contains("sector: 512 [bytes]"), "{dump}");
        assert!(dump.contains("Label:         \tHOSTTEST"), "{dump}");
    }
}

#[test]
fn luks1_tables_carry_the_key_inline_like_cryptsetup() {
    let seg = CryptSegment {
        cipher: "aes-cbc-essiv:sha256".into(),
        key_size: 32,
        offset: 4096 * 512,
        size: None,
        iv_tweak: 0,
        sector_size: 512,
        digest_id: None,
    };
    let key = VolumeKey::from_slice(&(0u8..32).collect::<Vec<_>>());
    let t = table::crypt_table(&seg, &KeyReference::Inline(&key), (8, 17), 1 << 30, CryptFlags::default()).unwrap();
    let hex: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
    assert_eq!(t.params_str(), format!("aes-cbc-essiv:sha256 {hex} 0 8:17 4096"));
    assert_eq!(offdisk::dm::mask_key(t.params_str()), format!("aes-cbc-essiv:sha256 {} 0 8:17 4096", "0".repeat(64)));
    assert_eq!(
        table::dm_uuid(Version::Luks1, "f6a429cb-0103-4054-b4cb-b17f68eda8dd", "b1"),
        "CRYPT-LUKS1-f6a429cb01034054b4cbb17f68eda8dd-b1"
    );
}

#[test]
fn gpt_written_by_us_is_what_sfdisk_and_blkid_read() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&img).unwrap();
    f.set_len(100 << 20).unwrap();
    let plan = gpt::GptPlan::new(100 << 20, 512, "OFFSITE1", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()).unwrap();
    gpt::write(&f, &plan).unwrap();
    drop(f);

    let mut head = std::fs::File::open(&img).unwrap();
    assert_eq!(probe::identify(&probe::read_head(&mut head).unwrap()), vec![probe::Signature::Gpt]);

    if have("sfdisk") {
        let out = Command::new("sfdisk").arg("--json").arg(&img).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let pt = &v["partitiontable"];
        assert_eq!(pt["label"], "gpt");
        assert_eq!(pt["id"].as_str().unwrap().to_lowercase(), plan.disk_guid.to_string());
        let p = &pt["partitions"][0];
        assert_eq!(p["start"], 2048);
        assert_eq!(p["size"].as_u64().unwrap() * 512, plan.partition_bytes().1);
        assert_eq!(p["type"], "CA7D7CCB-63ED-4C53-861C-1742536059CC");
        assert_eq!(p["uuid"].as_str().unwrap().to_lowercase(), plan.part_guid.to_string());
        assert_eq!(p["name"], "OFFSITE1");
        let verify = Command::new("sfdisk").arg("--verify").arg(&img).output().unwrap();
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    }
    if have("blkid") {
        let out = Command::new("blkid").args(["-p", "-o", "value", "-s", "PTTYPE"]).arg(&img).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "gpt");
    }
}

#[test]
fn probe_recognises_an_ext4_made_by_mkfs() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    have("mkfs.ext4");
    assert!(Command::new("mkfs.ext4").args(mkfs::mkfs_args(&img, "MYLABEL")).output().unwrap().status.success());
    let found = probe::probe(&img).unwrap();
    assert_eq!(found, vec![probe::Signature::Ext { label: "MYLABEL".into() }]);
    assert!(mount::default_mount_point("MYLABEL", "x").ends_with("MYLABEL"));
}
