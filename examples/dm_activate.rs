//! Test-only driver of the device-mapper layer, used by the VM suite before (and besides) the
//! LUKS layer: activates a crypt segment described on the command line with a volume key in hex
//! read from standard input (as `cryptsetup luksDump --dump-volume-key` prints it).
//!
//! dm_activate open NAME DEVICE luks1|luks2 UUID CIPHER KEYBYTES OFFSET SECTOR [ro]  < hexkey
//! dm_activate table NAME | deps NAME | info NAME | close NAME | list

use offdisk::dm;
use offdisk::luks::{CryptSegment, Version};
use offdisk::secret::VolumeKey;
use std::io::Read;
use std::path::Path;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let r = run(&a);
    if let Err(e) = r {
        eprintln!("dm_activate: {e}");
        std::process::exit(1);
    }
}

fn run(a: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let ctl = || dm::Control::open();
    match a.first().map(String::as_str) {
        Some("open") => {
            let version = if a[3] == "luks1" { Version::Luks1 } else { Version::Luks2 };
            let seg = CryptSegment {
                cipher: a[5].clone(),
                key_size: a[6].parse()?,
                offset: a[7].parse()?,
                size: None,
                iv_tweak: 0,
                sector_size: a[8].parse()?,
                digest_id: if version == Version::Luks2 { Some(0) } else { None },
            };
            let mut hex = String::new();
            std::io::stdin().read_to_string(&mut hex)?;
            let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let bytes: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)).collect::<Result<_, _>>()?;
            let key = VolumeKey::from_slice(&bytes);
            let m = dm::activate(
                &dm::CryptActivation {
                    name: &a[1],
                    version,
                    luks_uuid: &a[4],
                    segment: &seg,
                    device: Path::new(&a[2]),
                    read_only: a.get(9).map(|s| s == "ro").unwrap_or(false),
                    flags: dm::CryptFlags::default(),
                },
                &key,
            )?;
            println!("{} {:?} {}:{}", m.path.display(), m.key_delivery, m.dev.0, m.dev.1);
        }
        Some("table") => {
            for t in ctl()?.table(&a[1])? {
                println!("{} {} {} {}", t.start, t.length, t.target_type, dm::mask_key(&t.params));
            }
        }
        Some("deps") => println!("{:?}", ctl()?.deps(&a[1])?),
        Some("info") => println!("{:?}", ctl()?.info(&a[1])?),
        Some("close") => dm::deactivate(&a[1])?,
        Some("list") => {
            for i in ctl()?.list()? {
                println!("{} {} {}:{}", i.name, i.uuid, i.dev.0, i.dev.1);
            }
        }
        _ => return Err("usage: see the file header".into()),
    }
    Ok(())
}
