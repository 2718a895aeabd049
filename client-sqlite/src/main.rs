//! The `shapesync-client` program: see `cli` for the commands.

fn main() -> std::process::ExitCode {
    client_sqlite_cli::main()
}

mod client_sqlite_cli {
    pub fn main() -> std::process::ExitCode {
        std::process::ExitCode::SUCCESS
    }
}
