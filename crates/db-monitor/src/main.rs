//! The `db-monitor` binary: parses its arguments, runs the library's report, and prints the
//! error chain once when it could not run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match db_monitor::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DB_MONITOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match db_monitor::run(&cli) {
        Ok(code) => code,
        Err(err) => {
            db_monitor::print_error(&err);
            ExitCode::from(db_monitor::COULD_NOT_RUN)
        }
    }
}
