//! Process facts for `/v1/status` and `/v1/metrics`, read from `/proc` where it exists.

/// Memory and thread counts of this process (zeros where the platform does not say).
#[derive(Default)]
pub(crate) struct Memory {
    pub resident: u64,
    pub stack: u64,
    pub threads: u64,
}

/// Reads `/proc/self/status` (`VmRSS`, `VmStk`, `Threads`).
pub(crate) fn memory() -> Memory {
    let mut m = Memory::default();
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return m;
    };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let n: u64 = value.parse().unwrap_or(0);
        match key {
            "VmRSS:" => m.resident = n * 1024,
            "VmStk:" => m.stack = n * 1024,
            "Threads:" => m.threads = n,
            _ => {}
        }
    }
    m
}
