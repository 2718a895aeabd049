//! The `shapesync` program, built inside the `tests` package so its integration tests can run
//! it as a separate process (and `kill -9` it): `CARGO_BIN_EXE_test-shapesync`.

fn main() -> std::process::ExitCode {
    proxy::cli::main()
}
