//! What is already on a device: recognises the signatures that mean "this disk is in use"
//! (LUKS, filesystems, partition tables, swap) from the first bytes of the device, and asks
//! `blkid -p` for a second opinion on anything we do not know ourselves.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// How many bytes from the start of the device `identify` looks at.
pub const PROBE_BYTES: usize = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Luks { version: u16 },
    Ext { label: String },
    Gpt,
    Mbr,
    Swap,
    Xfs,
    Btrfs,
    Fat,
    Ntfs,
    Iso9660,
    /// Found by `blkid -p`: its TYPE (or PTTYPE).
    Other(String),
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signature::Luks { version } => write!(f, "LUKS{version} header"),
            Signature::Ext { label } if label.is_empty() => write!(f, "ext2/3/4 filesystem"),
            Signature::Ext { label } => write!(f, "ext2/3/4 filesystem labelled '{label}'"),
            Signature::Gpt => write!(f, "GPT partition table"),
            Signature::Mbr => write!(f, "MBR (DOS) partition table"),
            Signature::Swap => write!(f, "swap space"),
            Signature::Xfs => write!(f, "XFS filesystem"),
            Signature::Btrfs => write!(f, "Btrfs filesystem"),
            Signature::Fat => write!(f, "FAT filesystem"),
            Signature::Ntfs => write!(f, "NTFS filesystem"),
            Signature::Iso9660 => write!(f, "ISO 9660 image"),
            Signature::Other(t) => write!(f, "{t} (found by blkid)"),
        }
    }
}

fn at(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

/// Signatures in the first bytes of a device (pure; `head` may be shorter than PROBE_BYTES).
pub fn identify(head: &[u8]) -> Vec<Signature> {
    let mut found = Vec::new();
    if at(head, 0, 6) == Some(b"LUKS\xba\xbe") {
        let version = at(head, 6, 2).map(|v| u16::from_be_bytes([v[0], v[1]])).unwrap_or(0);
        found.push(Signature::Luks { version });
    }
    // ext2/3/4: superblock at 1024, s_magic 0xEF53 (little-endian) at +56, label at +120.
    if at(head, 1080, 2) == Some(&[0x53, 0xef]) {
        let raw = at(head, 1024 + 120, 16).unwrap_or(&[]);
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        found.push(Signature::Ext { label: String::from_utf8_lossy(&raw[..end]).into_owned() });
    }
    // GPT header in LBA 1, for 512- or 4096-byte logical sectors.
    if at(head, 512, 8) == Some(b"EFI PART") || at(head, 4096, 8) == Some(b"EFI PART") {
        found.push(Signature::Gpt);
    }
    // An MBR: boot signature plus at least one non-empty partition entry that is not the
    // protective 0xEE entry of a GPT, and not a FAT/NTFS boot sector.
    if at(head, 510, 2) == Some(&[0x55, 0xaa]) {
        let is_boot_sector = at(head, 3, 8) == Some(b"NTFS    ")
            || at(head, 54, 3) == Some(b"FAT")
            || at(head, 82, 5) == Some(b"FAT32");
        if is_boot_sector {
            if at(head, 3, 8) == Some(b"NTFS    ") {
                found.push(Signature::Ntfs);
            } else {
                found.push(Signature::Fat);
            }
        } else {
            let has_entry = (0..4).any(|i| {
                let e = at(head, 446 + 16 * i, 16).unwrap_or(&[0; 16]);
                e[4] != 0 && e[4] != 0xee
            });
            if has_entry && !found.contains(&Signature::Gpt) {
                found.push(Signature::Mbr);
            }
        }
    }
    for page in [4096usize, 8192, 16384, 65536] {
        let sig = at(head, page - 10, 10);
        if sig == Some(b"SWAPSPACE2") || sig == Some(b"SWAP-SPACE") {
            found.push(Signature::Swap);
            break;
        }
    }
    if at(head, 0, 4) == Some(b"XFSB") {
        found.push(Signature::Xfs);
    }
    if at(head, 0x10040, 8) == Some(b"_BHRfS_M") {
        found.push(Signature::Btrfs);
    }
    if at(head, 0x8001, 5) == Some(b"CD001") {
        found.push(Signature::Iso9660);
    }
    found
}

/// Reads the first PROBE_BYTES of `dev` (fewer if it is smaller).
pub fn read_head(dev: &mut File) -> io::Result<Vec<u8>> {
    dev.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(PROBE_BYTES);
    dev.take(PROBE_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Everything found on `path`: our own probe plus `blkid -p` (when installed) for other types.
pub fn probe(path: &Path) -> io::Result<Vec<Signature>> {
    let mut f = File::open(path)?;
    let mut found = identify(&read_head(&mut f)?);
    for t in blkid_types(path) {
        let known = match t.as_str() {
            "crypto_LUKS" => found.iter().any(|s| matches!(s, Signature::Luks { .. })),
            "ext2" | "ext3" | "ext4" => found.iter().any(|s| matches!(s, Signature::Ext { .. })),
            "gpt" => found.contains(&Signature::Gpt),
            "dos" => found.contains(&Signature::Mbr),
            "swap" => found.contains(&Signature::Swap),
            "xfs" => found.contains(&Signature::Xfs),
            "btrfs" => found.contains(&Signature::Btrfs),
            "vfat" => found.contains(&Signature::Fat),
            "ntfs" => found.contains(&Signature::Ntfs),
            "iso9660" => found.contains(&Signature::Iso9660),
            _ => false,
        };
        if !known {
            found.push(Signature::Other(t));
        }
    }
    Ok(found)
}

/// TYPE and PTTYPE values `blkid -p` reports (low-level probe, no cache). Empty when blkid
/// is missing or finds nothing.
fn blkid_types(path: &Path) -> Vec<String> {
    let out = std::process::Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(path)
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("TYPE=").or_else(|| l.strip_prefix("PTTYPE=")))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_blank() {
        assert!(identify(&vec![0u8; PROBE_BYTES]).is_empty());
        assert!(identify(&[]).is_empty());
    }

    #[test]
    fn luks_and_ext_and_gpt() {
        let mut b = vec![0u8; PROBE_BYTES];
        b[..6].copy_from_slice(b"LUKS\xba\xbe");
        b[7] = 2;
        assert_eq!(identify(&b), vec![Signature::Luks { version: 2 }]);

        let mut e = vec![0u8; 4096];
        e[1080] = 0x53;
        e[1081] = 0xef;
        e[1144..1148].copy_from_slice(b"BACK");
        assert_eq!(identify(&e), vec![Signature::Ext { label: "BACK".into() }]);

        let mut g = vec![0u8; 4096];
        g[510] = 0x55;
        g[511] = 0xaa;
        g[446 + 4] = 0xee;
        g[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(identify(&g), vec![Signature::Gpt]);
    }

    #[test]
    fn mbr_and_swap() {
        let mut m = vec![0u8; 8192];
        m[510] = 0x55;
        m[511] = 0xaa;
        m[446 + 16 + 4] = 0x83;
        m[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(identify(&m), vec![Signature::Mbr, Signature::Swap]);
    }
}

/// Version, UUID and (LUKS2) label from the first 4 KiB of a LUKS header. Both versions keep the
/// UUID at byte 168 (40 bytes); LUKS2 keeps its label at byte 24 (48 bytes). For finding disks
/// only: the LUKS layer validates headers before anything is trusted.
pub fn luks_identity(head: &[u8]) -> Option<(u16, String, Option<String>)> {
    if at(head, 0, 6) != Some(b"LUKS\xba\xbe") {
        return None;
    }
    let version = at(head, 6, 2).map(|v| u16::from_be_bytes([v[0], v[1]]))?;
    let cstr = |b: &[u8]| {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let uuid = cstr(at(head, 168, 40)?);
    let label = if version == 2 { Some(cstr(at(head, 24, 48)?)).filter(|l| !l.is_empty()) } else { None };
    Some((version, uuid, label))
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn reads_uuid_and_label() {
        let mut h = vec![0u8; 4096];
        h[..6].copy_from_slice(b"LUKS\xba\xbe");
        h[7] = 2;
        h[24..28].copy_from_slice(b"BACK");
        h[168..204].copy_from_slice(b"a12d9317-39b6-49a6-82f7-1e9f1b75dc8c");
        assert_eq!(
            luks_identity(&h),
            Some((2, "a12d9317-39b6-49a6-82f7-1e9f1b75dc8c".into(), Some("BACK".into())))
        );
        h[7] = 1;
        assert_eq!(luks_identity(&h).unwrap().2, None);
        h[0] = b'X';
        assert_eq!(luks_identity(&h), None);
    }
}
