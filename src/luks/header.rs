//! The LUKS2 binary header: two copies (primary at 0, secondary at hdr_size), each a
//! 4096-byte binary part followed by the JSON area, protected by a checksum.

use super::codec::{Reader, Writer};
use super::hash::HashAlg;
use super::io::BlockIo;
use super::metadata::Metadata;
use super::LuksError;

pub use super::metadata::{BINARY_SIZE, HDR_SIZES};
pub const MAGIC_PRIMARY: [u8; 6] = *b"LUKS\xba\xbe";
pub const MAGIC_SECONDARY: [u8; 6] = *b"SKUL\xba\xbe";
const CSUM_OFFSET: usize = 448;
pub const LABEL_LEN: usize = 48;
pub const SUBSYSTEM_LEN: usize = 48;
pub const UUID_LEN: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    Primary,
    Secondary,
}

impl Copy {
    pub fn name(self) -> &'static str {
        match self {
            Copy::Primary => "primary",
            Copy::Secondary => "secondary",
        }
    }
}

/// The binary part of one header copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryHeader {
    pub copy: Copy,
    pub hdr_size: u64,
    pub seqid: u64,
    pub label: String,
    pub csum_alg: String,
    pub salt: [u8; 64],
    pub uuid: String,
    pub subsystem: String,
    pub hdr_offset: u64,
    pub csum: [u8; 64],
}

impl BinaryHeader {
    /// Parses the 4096-byte binary header (no checksum check here).
    pub fn parse(raw: &[u8]) -> Result<BinaryHeader, LuksError> {
        let mut r = Reader::new(raw, "LUKS2 binary header");
        let magic: [u8; 6] = r.array()?;
        let copy = match magic {
            MAGIC_PRIMARY => Copy::Primary,
            MAGIC_SECONDARY => Copy::Secondary,
            _ => return Err(LuksError::Header("bad magic".into())),
        };
        let version = r.u16()?;
        if version != 2 {
            return Err(LuksError::Header(format!("version {version} where 2 was expected")));
        }
        let hdr_size = r.u64()?;
        let seqid = r.u64()?;
        // Text fields are cut at their last byte, as cryptsetup reads them.
        let label = r.c_string_lossy(LABEL_LEN)?;
        let csum_alg = r.c_string_lossy(32)?;
        let salt: [u8; 64] = r.array()?;
        let uuid = r.c_string_lossy(UUID_LEN)?;
        let subsystem = r.c_string_lossy(SUBSYSTEM_LEN)?;
        let hdr_offset = r.u64()?;
        r.skip(CSUM_OFFSET - r.position())?;
        let csum: [u8; 64] = r.array()?;
        r.skip(BINARY_SIZE - r.position())?;
        r.finish()?;
        if !HDR_SIZES.contains(&hdr_size) {
            return Err(LuksError::Header(format!("header size {hdr_size} is not one of the allowed sizes (16 KiB to 4 MiB)")));
        }
        // cryptsetup takes any text here; offdisk names mappings and keys after the UUID,
        // so it must be one.
        if uuid::Uuid::parse_str(&uuid).is_err() {
            return Err(LuksError::Header(format!("uuid {uuid:?} is not a UUID")));
        }
        Ok(BinaryHeader { copy, hdr_size, seqid, label, csum_alg, salt, uuid, subsystem, hdr_offset, csum })
    }

    /// The 4096 bytes of this header with the given checksum field.
    pub fn serialize(&self, csum: &[u8; 64]) -> Vec<u8> {
        let mut out = vec![0u8; BINARY_SIZE];
        let mut w = Writer::new(&mut out);
        w.bytes(match self.copy {
            Copy::Primary => &MAGIC_PRIMARY,
            Copy::Secondary => &MAGIC_SECONDARY,
        });
        w.u16(2);
        w.u64(self.hdr_size);
        w.u64(self.seqid);
        w.c_string(&self.label, LABEL_LEN);
        w.c_string(&self.csum_alg, 32);
        w.bytes(&self.salt);
        w.c_string(&self.uuid, UUID_LEN);
        w.c_string(&self.subsystem, SUBSYSTEM_LEN);
        w.u64(self.hdr_offset);
        let pad = CSUM_OFFSET - w.position();
        w.zeros(pad);
        w.bytes(csum);
        out
    }

    fn csum_hash(&self) -> Result<HashAlg, LuksError> {
        HashAlg::parse(&self.csum_alg).map_err(|_| LuksError::Header(format!("unsupported checksum algorithm {:?}", self.csum_alg)))
    }

    /// Checksum over the binary header (csum zeroed) and the JSON area.
    pub fn compute_csum(&self, json_area: &[u8]) -> Result<[u8; 64], LuksError> {
        csum_raw(self.csum_hash()?, &self.serialize(&[0u8; 64]), json_area)
    }

    /// The full bytes of this copy (binary + JSON area) with a fresh checksum.
    pub fn seal(&self, json_area: &[u8]) -> Result<Vec<u8>, LuksError> {
        let csum = self.compute_csum(json_area)?;
        let mut out = self.serialize(&csum);
        out.extend_from_slice(json_area);
        Ok(out)
    }
}

/// Checksum of a binary header exactly as stored (its csum field zeroed) plus JSON area.
fn csum_raw(hash: HashAlg, binary: &[u8], json_area: &[u8]) -> Result<[u8; 64], LuksError> {
    let mut bin = binary.to_vec();
    bin[CSUM_OFFSET..CSUM_OFFSET + 64].fill(0);
    let mut c = [0u8; 64];
    hash.hash_into(&[&bin, json_area], &mut c[..hash.output_len()]);
    Ok(c)
}

/// One valid header copy as read from the device.
#[derive(Debug, Clone)]
pub struct HeaderCopy {
    pub bin: BinaryHeader,
    pub meta: Metadata,
}

/// Reads and fully validates the copy at `offset` expected to be `copy`.
pub fn read_copy(io: &dyn BlockIo, offset: u64, copy: Copy) -> Result<HeaderCopy, LuksError> {
    let mut raw = vec![0u8; BINARY_SIZE];
    io.read_at(&mut raw, offset).map_err(|e| LuksError::Header(format!("cannot read: {e}")))?;
    let bin = BinaryHeader::parse(&raw)?;
    parse_copy_body(io, &raw, bin, offset, copy)
}

fn parse_copy_body(io: &dyn BlockIo, raw: &[u8], bin: BinaryHeader, offset: u64, copy: Copy) -> Result<HeaderCopy, LuksError> {
    if bin.copy != copy {
        return Err(LuksError::Header(format!("found a {} header where the {} belongs", bin.copy.name(), copy.name())));
    }
    if bin.hdr_offset != offset {
        return Err(LuksError::Header(format!("header says it is at offset {} but was read at {offset}", bin.hdr_offset)));
    }
    if copy == Copy::Secondary && offset != bin.hdr_size {
        return Err(LuksError::Header(format!("secondary header at {offset} does not match its size {}", bin.hdr_size)));
    }
    // hdr_size is one of the allowed sizes, so this allocation is at most 4 MiB.
    let mut json = vec![0u8; (bin.hdr_size as usize) - BINARY_SIZE];
    io.read_at(&mut json, offset + BINARY_SIZE as u64)
        .map_err(|e| LuksError::Header(format!("cannot read JSON area: {e}")))?;
    // Over the bytes as stored, so junk in padding or after a NUL is caught too.
    let want = csum_raw(bin.csum_hash()?, raw, &json)?;
    if want != bin.csum {
        return Err(LuksError::Header("checksum mismatch".into()));
    }
    let meta = Metadata::parse(&json, bin.hdr_size)?;
    Ok(HeaderCopy { bin, meta })
}

/// What reading both copies found.
#[derive(Debug)]
pub struct Found {
    pub primary: Result<HeaderCopy, LuksError>,
    pub secondary: Result<HeaderCopy, LuksError>,
}

/// Reads the secondary copy: where the primary says, or (primary unusable) by probing
/// every allowed offset.
pub fn read_secondary(io: &dyn BlockIo, primary: &Result<HeaderCopy, LuksError>) -> Result<HeaderCopy, LuksError> {
    if let Ok(p) = primary {
        return read_copy(io, p.bin.hdr_size, Copy::Secondary);
    }
    let mut first_err = None;
    for &off in &HDR_SIZES {
        let mut magic = [0u8; 6];
        if io.read_at(&mut magic, off).is_err() {
            break;
        }
        if magic != MAGIC_SECONDARY {
            continue;
        }
        match read_copy(io, off, Copy::Secondary) {
            Ok(c) => return Ok(c),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| LuksError::Header("no secondary header found".into())))
}

pub fn read_both(io: &dyn BlockIo) -> Found {
    let primary = read_copy(io, 0, Copy::Primary);
    let secondary = read_secondary(io, &primary);
    Found { primary, secondary }
}

/// Bytes at the start of a device to look at for other formats' signatures.
pub const SIGNATURE_PROBE_LEN: usize = 68 << 10;

/// Looks for another format's signature at the start of a device (`first`: up to
/// `SIGNATURE_PROBE_LEN` bytes), as blkid would find it: recovering a LUKS2 header from its
/// secondary copy is safe only when nothing else has taken the primary's place (mkfs, a
/// partition table, an LVM PV). Over a LUKS magic only signatures that cannot collide with
/// LUKS header fields count (a damaged LUKS header is not "another format").
pub fn other_signature(first: &[u8]) -> Option<&'static str> {
    let at = |off: usize, sig: &[u8]| first.get(off..off + sig.len()) == Some(sig);
    let ext = at(0x438, &[0x53, 0xef]);
    let gpt = at(512, b"EFI PART");
    if at(0, &MAGIC_PRIMARY) {
        return if ext {
            Some("ext2/3/4 filesystem")
        } else if gpt {
            Some("GPT partition table")
        } else {
            None
        };
    }
    let lvm = (0..4).any(|s| at(s * 512, b"LABELONE") && at(s * 512 + 24, b"LVM2 001"));
    let md = [0usize, 4096].iter().any(|&o| at(o, &0xa92b_4efcu32.to_le_bytes()));
    if ext {
        Some("ext2/3/4 filesystem")
    } else if at(0, b"XFSB") {
        Some("XFS filesystem")
    } else if at(0x10040, b"_BHRfS_M") {
        Some("btrfs filesystem")
    } else if gpt {
        Some("GPT partition table")
    } else if lvm {
        Some("LVM2 physical volume")
    } else if md {
        Some("Linux RAID member")
    } else if at(4086, b"SWAPSPACE2") || at(4086, b"SWAP-SPACE") {
        Some("swap space")
    } else if at(0, b"hsqs") {
        Some("squashfs filesystem")
    } else if at(3, b"NTFS    ") {
        Some("NTFS filesystem")
    } else if at(0x52, b"FAT32   ") || at(0x36, b"FAT16   ") || at(0x36, b"FAT12   ") {
        Some("FAT filesystem")
    } else if at(510, &[0x55, 0xaa]) {
        Some("DOS partition table / boot sector")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_parse_round_trip() {
        let h = BinaryHeader {
            copy: Copy::Secondary,
            hdr_size: 16384,
            seqid: 9,
            label: "lbl".into(),
            csum_alg: "sha256".into(),
            salt: [3; 64],
            uuid: "240c424c-88cb-4879-878f-acc631a6c0de".into(),
            subsystem: "sub".into(),
            hdr_offset: 16384,
            csum: [0; 64],
        };
        let raw = h.serialize(&[5; 64]);
        assert_eq!(raw.len(), BINARY_SIZE);
        let back = BinaryHeader::parse(&raw).unwrap();
        assert_eq!(back, BinaryHeader { csum: [5; 64], ..h });
    }
}
