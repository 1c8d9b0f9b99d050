//! `kes-node log [--audit|--error]`: follow the server's audit or error log until interrupted
//! (or until the server ends the stream).
use std::io::Write;

use super::client_command;

client_command! {
    /// Print the server's audit log (default) or error log as events arrive.
    #[argh(subcommand, name = "log")]
    pub(crate) struct LogArgs {
        /// follow the audit log (the default)
        #[argh(switch)]
        audit: bool,
        /// follow the error log
        #[argh(switch)]
        error: bool,
    }
}

pub(crate) fn run(a: LogArgs) -> Result<(), String> {
    if a.audit && a.error {
        return Err("--audit and --error exclude each other".into());
    }
    let client = a.connect()?;
    let stream = if a.error {
        client.error_log()
    } else {
        client.audit_log()
    }
    .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    if !a.json && !a.error {
        let _ = writeln!(
            out,
            "{:<20}  {:<4}  {:>8}  {:<16}  PATH",
            "TIME", "CODE", "LATENCY", "IDENTITY"
        );
        let _ = out.flush();
    }
    for line in stream {
        let line = line.map_err(|e| e.to_string())?;
        let text = if a.json {
            line
        } else if a.error {
            error_line(&line)
        } else {
            audit_line(&line)
        };
        // A closed stdout (`| head`) ends the command quietly.
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// `{"message": "..."}` → the message.
fn error_line(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| line.to_owned())
}

/// An audit event as one table row: time, status, latency, identity (shortened), path.
fn audit_line(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let s = |ptr: &str| {
        v.pointer(ptr)
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let time: String = s("/time").chars().take(19).collect();
    let identity: String = s("/request/identity").chars().take(16).collect();
    // Nanoseconds, as the Go client reads it (a `time.Duration`).
    let latency = match v.pointer("/response/time").and_then(|t| t.as_u64()) {
        Some(ns) => latency(ns),
        None => String::new(),
    };
    format!(
        "{time:<20}  {:<4}  {latency:>8}  {identity:<16}  {}",
        s("/response/code"),
        s("/request/path"),
    )
}

/// A latency in nanoseconds as `850ns`, `12.3µs`, `4.5ms` or `1.2s`.
fn latency(ns: u64) -> String {
    let ns_f = ns as f64;
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns_f / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns_f / 1e6),
        _ => format!("{:.1}s", ns_f / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_events() {
        assert_eq!(
            error_line(r#"{"message":"time=x level=ERROR msg=boom"}"#),
            "time=x level=ERROR msg=boom"
        );
        let row = audit_line(
            r#"{"time":"2024-01-12T10:39:20.886816Z","request":{"path":"/v1/key/create/k","identity":"0123456789abcdef0123"},"response":{"code":200,"time":2998844}}"#,
        );
        assert_eq!(
            row,
            "2024-01-12T10:39:20   200      3.0ms  0123456789abcdef  /v1/key/create/k"
        );
        assert_eq!(audit_line("not json"), "not json");
        assert_eq!(latency(850), "850ns");
        assert_eq!(latency(9_972), "10.0µs");
        assert_eq!(latency(1_500_000_000), "1.5s");
    }
}
