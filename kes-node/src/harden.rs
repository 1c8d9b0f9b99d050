//! Start-up hardening of the long-running servers (`kes-node server`, `server --dev`, `edge`):
//! keep the secrets they hold (the HSM key, the root key, imported keys, API key seeds) out of
//! places other than the process's own memory. [`start`] runs first thing, in this order:
//!
//! 1. **The HSM key leaves the environment.** `KES_HSM_KEY` stays readable in
//!    `/proc/PID/environ` (by the same user and root) for the life of the process, and
//!    `std::env::remove_var` does not help: it edits the C library's copy of the environment,
//!    while `/proc/PID/environ` shows the block the kernel laid on the stack at `exec`. So a
//!    process that finds the variable writes its value into a pipe and `exec`s itself again
//!    (same PID, same arguments) without it; the new image reads the key from the pipe's read
//!    end, whose number it finds in `KES_HSM_KEY_FD`, and keeps it in memory ([`hsm_key`]).
//!    The old environment block is gone with the old image. (The inherited descriptor stays
//!    open, empty and without a writer: closing a descriptor by number takes unsafe code.)
//! 2. **No core dumps.** A core file of a running server holds every key it has touched.
//!    `RLIMIT_CORE` 0 (soft and hard) stops the kernel writing one; not dumpable
//!    (`PR_SET_DUMPABLE` 0) also stops core handlers that ignore the limit (`|` patterns),
//!    and keeps other processes of the same user from ptrace-attaching or reading
//!    `/proc/PID/mem`.
//! 3. **Memory locked** (`mlockall`), so key material is never written to swap. With
//!    `MCL_ONFAULT` (Linux 4.4) only pages the process touches are locked, as it touches them:
//!    plain `MCL_CURRENT | MCL_FUTURE` would fault in and pin every reserved thread stack and
//!    allocator arena. Where the process may not lock without limit (no `CAP_IPC_LOCK` and a
//!    finite `RLIMIT_MEMLOCK`) it does not try: with `MCL_FUTURE` every later allocation past
//!    the limit would fail. As upstream, the server then logs one line and goes on.
//!
//! Short-lived commands (`hsm`, `restore`, the client) are not hardened.
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::sync::OnceLock;

use rustix::mm::{mlockall, MlockAllFlags};
use rustix::process::{getrlimit, setrlimit, DumpableBehavior, Resource, Rlimit};
use zeroize::Zeroizing;

/// The variable a SoftHSM key may be given in.
pub const HSM_KEY_VAR: &str = "KES_HSM_KEY";
/// The descriptor the key is handed over on across the re-`exec`.
pub const HSM_KEY_FD_VAR: &str = "KES_HSM_KEY_FD";
/// Longer values are refused (a key string is about 60 bytes; a pipe holds 64 KiB).
const MAX_KEY_LEN: usize = 4096;

/// The key handed over by the previous image of this process.
static HANDED_OVER: OnceLock<Zeroizing<String>> = OnceLock::new();

/// Hardens the process (see the module docs). Does not return if it re-`exec`s itself; an
/// error means the handed-over key could not be read (the server must not start).
pub fn start() -> Result<(), String> {
    hand_over_hsm_key()?;
    disable_core_dumps();
    lock_memory();
    Ok(())
}

/// The `KES_HSM_KEY` value: the one handed over at start-up, else the variable (for commands
/// that do not harden).
pub fn hsm_key() -> Option<Zeroizing<String>> {
    var(HSM_KEY_VAR).ok().map(Zeroizing::new)
}

/// `std::env::var`, except that `KES_HSM_KEY` is the handed-over key (for `${KES_HSM_KEY}` in
/// the config).
pub fn var(name: &str) -> Result<String, std::env::VarError> {
    match HANDED_OVER.get() {
        Some(key) if name == HSM_KEY_VAR => Ok(key.to_string()),
        _ => std::env::var(name),
    }
}

fn hand_over_hsm_key() -> Result<(), String> {
    if let Some(key) = std::env::var_os(HSM_KEY_VAR) {
        // Where that fails the server still starts: it reads the variable as before.
        let why = reexec_without_key(key);
        eprintln!(
            "kes-node: warning: {HSM_KEY_VAR} stays readable in /proc/{}/environ: {why}",
            std::process::id()
        );
        return Ok(());
    }
    if let Some(fd) = std::env::var_os(HSM_KEY_FD_VAR) {
        let key = receive_key(&fd)?;
        let _ = HANDED_OVER.set(key);
        restore_name();
    }
    Ok(())
}

/// An image started from `/proc/self/exe` is named `exe` (in `ps`, `pgrep`, `/proc/PID/comm`):
/// it takes its binary's file name back.
fn restore_name() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Some(name) = exe.file_name() else { return };
    // An unlinked binary reads as "kes-node (deleted)".
    let name = name.as_encoded_bytes();
    let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
    if let Ok(name) = std::ffi::CString::new(name) {
        let _ = rustix::thread::set_name(&name);
    }
}

/// Writes the key into a pipe and replaces this process by a fresh image of the same binary
/// without the variable. Returns only on failure.
fn reexec_without_key(key: OsString) -> String {
    let key = Zeroizing::new(key.into_vec());
    if key.len() > MAX_KEY_LEN {
        return format!(
            "{HSM_KEY_VAR} is too long to be a key ({} bytes)",
            key.len()
        );
    }
    let fail = |e: std::io::Error| format!("cannot hand {HSM_KEY_VAR} over: {e}");
    let (read, write) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(ends) => ends,
        Err(e) => return fail(e.into()),
    };
    // Only the read end survives the exec.
    if let Err(e) = rustix::io::fcntl_setfd(&read, rustix::io::FdFlags::empty()) {
        return fail(e.into());
    }
    let mut write = std::fs::File::from(write);
    if let Err(e) = write.write_all(&key) {
        return fail(e);
    }
    // The reader sees end-of-file after the key.
    drop(write);
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "kes-node".into());
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env_remove(HSM_KEY_VAR)
        .env(HSM_KEY_FD_VAR, read.as_raw_fd().to_string())
        .exec();
    drop(read);
    format!("cannot restart without {HSM_KEY_VAR} in the environment: {err}")
}

/// Reads the key from the inherited descriptor `fd` (through `/proc/self/fd`: safe code
/// cannot adopt a descriptor by number).
fn receive_key(fd: &OsStr) -> Result<Zeroizing<String>, String> {
    let fd: u32 = fd
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{HSM_KEY_FD_VAR}: not a file descriptor number"))?;
    let fail = |e: std::io::Error| format!("{HSM_KEY_FD_VAR}: cannot read the key: {e}");
    // Non-blocking: opening a pipe without a writer for reading would wait for one.
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(format!("/proc/self/fd/{fd}"))
        .map_err(fail)?;
    let mut buf = Zeroizing::new([0u8; MAX_KEY_LEN + 1]);
    let mut len = 0;
    loop {
        match pipe.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
        if len > MAX_KEY_LEN {
            return Err(format!("{HSM_KEY_FD_VAR}: the key is too long"));
        }
    }
    let text = std::str::from_utf8(&buf[..len])
        .map_err(|_| format!("{HSM_KEY_VAR} is not valid UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn disable_core_dumps() {
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = setrlimit(Resource::Core, none) {
        eprintln!("kes-node: warning: cannot turn core dumps off (RLIMIT_CORE): {e}");
    }
    if let Err(e) = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        eprintln!("kes-node: warning: cannot mark the process not dumpable: {e}");
    }
}

fn lock_memory() {
    let unlimited = getrlimit(Resource::Memlock).current.is_none();
    let privileged = rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::IPC_LOCK)
    });
    if !unlimited && !privileged {
        let limit = getrlimit(Resource::Memlock).current.unwrap_or(0);
        eprintln!(
            "kes-node: warning: memory is not locked (keys may be swapped out): RLIMIT_MEMLOCK \
             is {limit} bytes and the process lacks CAP_IPC_LOCK; grant CAP_IPC_LOCK or set \
             the limit to unlimited"
        );
        return;
    }
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    if let Err(e) = mlockall(flags) {
        eprintln!("kes-node: warning: memory is not locked (keys may be swapped out): {e}");
    }
}
