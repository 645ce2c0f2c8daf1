//! ohrun with redaction switched off, for the secrets tests only: they run it to prove that their checks
//! would see a leak. Built only with the `test-hooks` feature (the tests' dev-dependency turns it on).

fn main() -> std::process::ExitCode {
    ohrun::report::redact::switch_off_for_tests();
    std::process::ExitCode::from(ohrun::cli::main() as u8)
}
