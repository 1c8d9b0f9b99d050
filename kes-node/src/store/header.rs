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

/// What is wrong with a header. `Display` completes "kes.db is damaged: ...".
#[derive(Debug)]
pub(crate) enum HeaderDefect {
    Unreadable(std::io::Error),
    Magic,
    PageSize(u32),
    Regions {
        header_pages: u32,
        data_pages: u32,
    },
    TrailingRegion {
        trailing_pages: u32,
        region_pages: u32,
    },
    Truncated {
        len: u64,
        expected: u64,
    },
    /// The primary commit slot is older than the other one.
    OlderCommit {
        selected: u64,
        newer: u64,
    },
}

impl std::fmt::Display for HeaderDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderDefect::Unreadable(e) => write!(f, "its header cannot be read: {e}"),
            HeaderDefect::Magic => f.write_str("it does not start with redb's magic number"),
            HeaderDefect::PageSize(size) => {
                write!(f, "its header names an impossible page size ({size})")
            }
            HeaderDefect::Regions {
                header_pages,
                data_pages,
            } => write!(
                f,
                "its header describes impossible regions ({header_pages} header and \
                 {data_pages} data pages)"
            ),
            HeaderDefect::TrailingRegion {
                trailing_pages,
                region_pages,
            } => write!(
                f,
                "its header describes a last region of {trailing_pages} pages, larger than a \
                 full one ({region_pages})"
            ),
            HeaderDefect::Truncated { len, expected } => write!(
                f,
                "it is {len} bytes long but its header describes {expected} bytes: it was \
                 truncated, or its header is damaged"
            ),
            HeaderDefect::OlderCommit { selected, newer } => write!(
                f,
                "its header selects commit {selected} although commit {newer} is newer: its \
                 header is damaged"
            ),
        }
    }
}

/// Checks the header of `file` (`len` bytes long); `Err` says what is wrong.
pub(crate) fn check(file: &File, len: u64) -> Result<(), HeaderDefect> {
    let mut h = [0u8; 64];
    file.read_exact_at(&mut h, 0)
        .map_err(HeaderDefect::Unreadable)?;
    check_slots(file, h[9])?;
    if h[..MAGIC.len()] != MAGIC {
        return Err(HeaderDefect::Magic);
    }
    let page_size = u32_at(&h, 12);
    let region_header_pages = u32_at(&h, 16);
    let region_pages = u32_at(&h, 20);
    let full_regions = u32_at(&h, 24);
    let trailing_pages = u32_at(&h, 28);
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Err(HeaderDefect::PageSize(page_size));
    }
    if region_pages == 0 || region_pages > MAX_REGION_PAGES || region_header_pages == 0 {
        return Err(HeaderDefect::Regions {
            header_pages: region_header_pages,
            data_pages: region_pages,
        });
    }
    if trailing_pages > region_pages {
        return Err(HeaderDefect::TrailingRegion {
            trailing_pages,
            region_pages,
        });
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
        return Err(HeaderDefect::Truncated { len, expected });
    }
    Ok(())
}

/// After a clean close, the primary slot holds the newest commit; if the other slot is newer,
/// the flag that selects the primary was flipped and redb would open the previous commit,
/// silently without the last write. (After a crash the newer slot may be a commit that never
/// completed, so the check is skipped then.)
fn check_slots(file: &File, god: u8) -> Result<(), HeaderDefect> {
    if god & RECOVERY_REQUIRED != 0 {
        return Ok(());
    }
    let mut ids = [0u64; 2];
    for (id, slot) in ids.iter_mut().zip(SLOTS) {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, slot + SLOT_TRANSACTION_ID)
            .map_err(HeaderDefect::Unreadable)?;
        *id = u64::from_le_bytes(b);
    }
    let primary = usize::from(god & PRIMARY_BIT);
    if ids[primary] < ids[1 - primary] {
        return Err(HeaderDefect::OlderCommit {
            selected: ids[primary],
            newer: ids[1 - primary],
        });
    }
    Ok(())
}
