use clap::Parser;

/// shapesync-client: mirror shapes from a shapesync server into a local SQLite database.
#[derive(Debug, Parser)]
#[command(name = "shapesync-client", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("shapesync-client: no commands yet");
}
