//! A check of `kes.db`'s redb header before redb reads the file.
//!
//! The first 64 bytes of a redb file describe its layout (page size, region geometry, how many
//! regions) and, unlike the rest of the file, carry no checksum. redb trusts them: a flipped
//! bit there makes it assert, index out of bounds, or size its allocator state after a region
//! of billions of pages (which looks like a hang). So the fields are checked for sane values
//! and the file's length against the length they describe (a truncated file is shorter).
//! The offsets are redb 2's file format (versions 2 and 3).
use std::fs::File;
use std::os::unix::fs::FileExt;

/// `redb\x1A\x0A\xA9\x0D\x0A`
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// The largest region redb makes: 2^20 pages (its highest buddy allocator order).
const MAX_REGION_PAGES: u32 = 1 << 20;
/// redb's header and two commit slots, rounded up to a page.
const SUPER_HEADER_BYTES: u64 = 320;

fn u32_at(h: &[u8; 64], at: usize) -> u32 {
    u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"))
}

/// The god byte's flags: which commit slot is the latest, and whether the file was closed
/// uncleanly (redb then repairs it on open).
const PRIMARY_BIT: u8 = 1;
const RECOVERY_REQUIRED: u8 = 2;
/// Where the two commit slots start, and the transaction id inside a slot.
const SLOTS: [u64; 2] = [64, 192];
const SLOT_TRANSACTION_ID: u64 = 104;

/// Checks the header of `file` (`len` bytes long); `Err` says what is wrong.
pub(crate) fn check(file: &File, len: u64) -> Result<(), String> {
    let mut h = [0u8; 64];
    file.read_exact_at(&mut h, 0)
        .map_err(|e| format!("its header cannot be read: {e}"))?;
    check_slots(file, h[9])?;
    if h[..MAGIC.len()] != MAGIC {
        return Err("it does not start with redb's magic number".into());
    }
    let page_size = u32_at(&h, 12);
    let region_header_pages = u32_at(&h, 16);
    let region_pages = u32_at(&h, 20);
    let full_regions = u32_at(&h, 24);
    let trailing_pages = u32_at(&h, 28);
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Err(format!(
            "its header names an impossible page size ({page_size})"
        ));
    }
    if region_pages == 0 || region_pages > MAX_REGION_PAGES || region_header_pages == 0 {
        return Err(format!(
            "its header describes impossible regions ({region_header_pages} header and \
             {region_pages} data pages)"
        ));
    }
    if trailing_pages > region_pages {
        return Err(format!(
            "its header describes a last region of {trailing_pages} pages, larger than a full \
             one ({region_pages})"
        ));
    }
    let page = u64::from(page_size);
    let region = (u64::from(region_header_pages) + u64::from(region_pages)) * page;
    let trailing = match trailing_pages {
        0 => 0,
        n => (u64::from(region_header_pages) + u64::from(n)) * page,
    };
    let expected =
        SUPER_HEADER_BYTES.div_ceil(page) * page + u64::from(full_regions) * region + trailing;
    if len < expected {
        return Err(format!(
            "it is {len} bytes long but its header describes {expected} bytes: it was \
             truncated, or its header is damaged"
        ));
    }
    Ok(())
}

/// After a clean close, the primary slot holds the newest commit; if the other slot is newer,
/// the flag that selects the primary was flipped and redb would open the previous commit,
/// silently without the last write. (After a crash the newer slot may be a commit that never
/// completed, so the check is skipped then.)
fn check_slots(file: &File, god: u8) -> Result<(), String> {
    if god & RECOVERY_REQUIRED != 0 {
        return Ok(());
    }
    let mut ids = [0u64; 2];
    for (id, slot) in ids.iter_mut().zip(SLOTS) {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, slot + SLOT_TRANSACTION_ID)
            .map_err(|e| format!("its header cannot be read: {e}"))?;
        *id = u64::from_le_bytes(b);
    }
    let primary = usize::from(god & PRIMARY_BIT);
    if ids[primary] < ids[1 - primary] {
        return Err(format!(
            "its header selects commit {} although commit {} is newer: its header is damaged",
            ids[primary],
            ids[1 - primary]
        ));
    }
    Ok(())
}
