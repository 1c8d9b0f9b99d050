//! Secrets leave the process environment: `KES_HSM_KEY`, and the PKCS#11 PIN variable that
//! `hsm.pkcs11.pin_env` names.
//!
//! An environment variable stays readable in `/proc/PID/environ` (by the same user and root)
//! for the life of the process, and `std::env::remove_var` does not help: it edits the C
//! library's copy of the environment, while `/proc/PID/environ` shows the block the kernel laid
//! on the stack at `exec`. So a server that finds such a variable writes the values into a
//! pipe ([`hand_over`]) and `exec`s itself again (same PID, same arguments) without them; the
//! new image reads them from the pipe's read end, whose number it finds in `KES_SECRETS_FD`
//! ([`receive`]), and keeps them in memory ([`var`]). The old environment block is gone with
//! the old image. The inherited descriptor stays open, empty and without a writer: closing a
//! descriptor by number takes unsafe code, which kes-node forbids.
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::sync::OnceLock;

use zeroize::Zeroizing;

/// The descriptor the variables are handed over on across the re-`exec`.
pub(crate) const FD_VAR: &str = "KES_SECRETS_FD";
/// The most the pipe carries (a pipe holds 64 KiB; a key string is about 60 bytes).
const MAX_LEN: usize = 16 * 1024;

/// The variables handed over by the previous image of this process: (name, value).
static HANDED_OVER: OnceLock<Vec<(String, Zeroizing<String>)>> = OnceLock::new();

/// `std::env::var`, except that a handed-over variable has its handed-over value.
pub(crate) fn var(name: &str) -> Result<String, std::env::VarError> {
    match HANDED_OVER
        .get()
        .into_iter()
        .flatten()
        .find(|(n, _)| n == name)
    {
        Some((_, value)) => Ok(value.to_string()),
        None => std::env::var(name),
    }
}

/// In an image started by [`hand_over`], reads what it was handed (once; later calls and
/// other processes do nothing). An error means the server must not start: it lacks secrets.
pub(crate) fn receive() -> Result<(), String> {
    if HANDED_OVER.get().is_some() {
        return Ok(());
    }
    let Some(fd) = std::env::var_os(FD_VAR) else {
        return Ok(());
    };
    let vars = read_from(&fd)?;
    let _ = HANDED_OVER.set(vars);
    restore_name();
    Ok(())
}

/// If any of `names` is set, re-`exec`s this process without them, their values in a pipe.
/// Returns when none is set, or when that fails: then, with a warning, the variables stay
/// where they are and the server reads them there.
pub(crate) fn hand_over(names: &[&str]) {
    let present: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| std::env::var_os(n).is_some())
        .collect();
    if present.is_empty() {
        return;
    }
    let why = reexec_without(&present);
    eprintln!(
        "kes-node: warning: {} stays readable in /proc/{}/environ: {why}",
        present.join(", "),
        std::process::id()
    );
}

/// Writes `NAME\0VALUE\0`… into a pipe and replaces this process by a fresh image of the same
/// binary without the variables. Returns only on failure.
fn reexec_without(names: &[&str]) -> String {
    // Sized once: growing would leave copies behind.
    let mut payload = Zeroizing::new(Vec::with_capacity(MAX_LEN));
    for name in names {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        let value = Zeroizing::new(value.into_vec());
        if payload.len() + name.len() + value.len() + 2 > MAX_LEN {
            return format!("the values are too long (over {MAX_LEN} bytes)");
        }
        payload.extend_from_slice(name.as_bytes());
        payload.push(0);
        payload.extend_from_slice(&value);
        payload.push(0);
    }
    let fail = |e: std::io::Error| format!("cannot hand them over: {e}");
    let (read, write) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(ends) => ends,
        Err(e) => return fail(e.into()),
    };
    // Only the read end survives the exec.
    if let Err(e) = rustix::io::fcntl_setfd(&read, rustix::io::FdFlags::empty()) {
        return fail(e.into());
    }
    let mut write = std::fs::File::from(write);
    if let Err(e) = write.write_all(&payload) {
        return fail(e);
    }
    // The reader sees end-of-file after the payload.
    drop(write);
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "kes-node".into());
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0(argv0).args(args);
    for name in names {
        cmd.env_remove(name);
    }
    let err = cmd.env(FD_VAR, read.as_raw_fd().to_string()).exec();
    drop(read);
    format!("cannot restart without them in the environment: {err}")
}

/// Reads the variables from the inherited descriptor `fd` (through `/proc/self/fd`: safe code
/// cannot adopt a descriptor by number).
fn read_from(fd: &OsStr) -> Result<Vec<(String, Zeroizing<String>)>, String> {
    let fd: u32 = fd
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{FD_VAR}: not a file descriptor number"))?;
    let fail = |e: std::io::Error| format!("{FD_VAR}: cannot read the handed-over secrets: {e}");
    // Non-blocking: opening a pipe without a writer for reading would wait for one.
    let mut pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(format!("/proc/self/fd/{fd}"))
        .map_err(fail)?;
    let mut buf = Zeroizing::new([0u8; MAX_LEN + 1]);
    let mut len = 0;
    loop {
        match pipe.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
        if len > MAX_LEN {
            return Err(format!("{FD_VAR}: more than {MAX_LEN} bytes"));
        }
    }
    parse(&buf[..len])
}

/// `NAME\0VALUE\0`…
fn parse(payload: &[u8]) -> Result<Vec<(String, Zeroizing<String>)>, String> {
    let malformed = || format!("{FD_VAR}: malformed handover");
    let Some(body) = payload.strip_suffix(&[0]) else {
        return if payload.is_empty() {
            Ok(Vec::new())
        } else {
            Err(malformed())
        };
    };
    let mut parts = body.split(|b| *b == 0);
    let mut vars = Vec::new();
    while let Some(name) = parts.next() {
        let value = parts.next().ok_or_else(malformed)?;
        let name = std::str::from_utf8(name).map_err(|_| malformed())?;
        let value = std::str::from_utf8(value).map_err(|_| format!("{name} is not valid UTF-8"))?;
        vars.push((name.to_owned(), Zeroizing::new(value.to_owned())));
    }
    Ok(vars)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert!(parse(b"").unwrap().is_empty());
        let vars = parse(b"KES_HSM_KEY\0kes:v1:x\0PIN\0\0").unwrap();
        assert_eq!(vars.len(), 2);
        assert_eq!(
            (vars[0].0.as_str(), vars[0].1.as_str()),
            ("KES_HSM_KEY", "kes:v1:x")
        );
        assert_eq!((vars[1].0.as_str(), vars[1].1.as_str()), ("PIN", ""));
        assert!(parse(b"NAME\0").is_err());
        assert!(parse(b"NAME\0value").is_err());
    }
}
