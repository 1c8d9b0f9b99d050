//! `kes-node status [--api]`: the server's state, or with `--api` the routes it serves.
use super::{client_command, human_bytes, human_duration, print_fields, print_json, print_table};

client_command! {
    /// Print the server's status (or, with --api, its API routes).
    #[argh(subcommand, name = "status")]
    pub(crate) struct StatusArgs {
        /// list the server's API routes
        #[argh(switch)]
        api: bool,
    }
}

pub(crate) fn run(a: StatusArgs) -> Result<(), String> {
    let client = a.connect()?;
    if a.api {
        let routes = client.api().map_err(|e| e.to_string())?;
        if a.json {
            // One route object per line, as for every listing.
            let values: Vec<serde_json::Value> =
                serde_json::from_slice(routes.body()).map_err(|e| e.to_string())?;
            for v in values {
                println!("{v}");
            }
            return Ok(());
        }
        let mut sorted: Vec<_> = routes.iter().collect();
        sorted.sort_by(|x, y| x.path.cmp(&y.path));
        let mut rows = vec![vec![
            "METHOD".to_owned(),
            "PATH".to_owned(),
            "MAX BODY".to_owned(),
            "TIMEOUT".to_owned(),
        ]];
        for r in sorted {
            rows.push(vec![
                r.method.clone(),
                r.path.clone(),
                r.max_body.to_string(),
                if r.timeout == 0 {
                    "-".to_owned()
                } else {
                    format!("{}s", r.timeout)
                },
            ]);
        }
        print_table(&rows);
        return Ok(());
    }
    let status = client.status().map_err(|e| e.to_string())?;
    if a.json {
        print_json(status.body());
        return Ok(());
    }
    let keystore = if status.keystore_unavailable || status.keystore_unreachable {
        "unavailable".to_owned()
    } else {
        match status.keystore_latency {
            Some(ms) => format!("ok, {ms}ms"),
            None => "ok".to_owned(),
        }
    };
    print_fields(&[
        ("Endpoint", Some(client.endpoint().url())),
        ("Version", Some(status.version.clone())),
        ("System", Some(format!("{}/{}", status.os, status.arch))),
        (
            "Uptime",
            Some(human_duration(status.uptime.max(0.0) as u64)),
        ),
        (
            "CPUs",
            Some(format!("{} ({} used)", status.num_cpu, status.num_cpu_used)),
        ),
        (
            "Memory",
            Some(format!(
                "heap {}, stack {}",
                human_bytes(status.mem_heap_used),
                human_bytes(status.mem_stack_used)
            )),
        ),
        ("Keystore", Some(keystore)),
    ]);
    Ok(())
}
