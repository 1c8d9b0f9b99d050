//! `kes-node`: the kes-rs server and its tools. See `kes-node help`.
fn main() {
    let args: kes_node::cli::Args = argh::from_env();
    if let Err(msg) = kes_node::cli::run(args) {
        eprintln!("kes-node: {msg}");
        std::process::exit(1);
    }
}
