//! `haechi`: the command line of the moderation pipeline.
//!
//! Every subcommand lives in its own module; this file only parses arguments
//! and dispatches. Errors are printed as one readable chain and exit with 1;
//! usage errors exit with 2 (clap).

mod args;
mod replay;
mod review;
mod rules;
mod run;
mod store;
mod train;
mod tui;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the pipeline allocates many small,
/// short-lived strings and records, and glibc's allocator was a quarter of
/// the replay profile (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = args::Cli::parse();
    if let args::Command::Run(a) = &cli.command {
        // `haechi run` takes its logging from its configuration.
        let code = run::run(a, &cli.log);
        std::process::exit(code);
    }
    init_logging(&cli.log.log_level, cli.log.log_json);
    let result = match cli.command {
        args::Command::Replay(a) => replay::run(a),
        args::Command::Rules(a) => rules::run(a),
        args::Command::Train(a) => train::run(a),
        args::Command::Eval(a) => train::eval(a),
        args::Command::Review(a) => review::run(a),
        args::Command::Serve(a) => review::serve(a),
        args::Command::Run(_) => Ok(0),
        args::Command::Kafka(c) => run::kafka(c),
        args::Command::Store(c) => store::run(c),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("haechi: error: {e:#}");
            std::process::exit(1);
        }
    }
}

pub(crate) fn init_logging(level: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HAECHI_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}
