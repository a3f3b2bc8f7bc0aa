//! `haechi`: the command line of the moderation pipeline.
//!
//! Every subcommand lives in its own module; this file only parses arguments
//! and dispatches. Errors are printed as one readable chain and exit with 1;
//! usage errors exit with 2 (clap).

mod args;
mod replay;
mod review;
mod rules;
mod train;
mod tui;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        args::Command::Replay(a) => replay::run(a),
        args::Command::Rules(a) => rules::run(a),
        args::Command::Train(a) => train::run(a),
        args::Command::Eval(a) => train::eval(a),
        args::Command::Review(a) => review::run(a),
        args::Command::Serve(a) => review::serve(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("haechi: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn init_logging(log: &args::LogArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HAECHI_LOG")
        .unwrap_or_else(|_| EnvFilter::new(log.log_level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.log_json {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}
