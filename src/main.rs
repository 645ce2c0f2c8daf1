fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(ohrun::cli::main() as u8)
}
