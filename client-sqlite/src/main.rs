//! The `shapesync-client` program: a thin command line over the `client_sqlite` library.

mod cli;
mod progress;

fn main() -> std::process::ExitCode {
    cli::main()
}
