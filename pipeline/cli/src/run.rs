//! `haechi run`: the Kafka stream deployment (see `haechi_stream::kafka`).

use crate::args::{KafkaCommand, LogArgs, RunArgs};
use anyhow::Context;
use haechi_stream::kafka::tools;
use haechi_stream::kafka::{self, RunConfig};
use std::io::{BufRead, Write};

/// Returns the process exit status.
pub fn run(a: &RunArgs, log: &LogArgs) -> i32 {
    let cfg = match RunConfig::load(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("haechi: error: {e}");
            return 1;
        }
    };
    if a.print_config {
        match toml::to_string_pretty(&cfg) {
            Ok(t) => {
                print!("{t}");
                return 0;
            }
            Err(e) => {
                eprintln!("haechi: error: {e}");
                return 1;
            }
        }
    }
    // The command line's --log-level applies when it is more than the
    // quiet default; otherwise the configuration's level.
    let level = if log.log_level != "warn" {
        log.log_level.as_str()
    } else {
        cfg.log.level.as_str()
    };
    crate::init_logging(level, log.log_json || cfg.log.json);
    match kafka::run(cfg) {
        Ok(s) => {
            tracing::info!(
                events = s.events,
                "haechi run: drained and committed, exiting"
            );
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "haechi run stopped");
            eprintln!("haechi: error: {e}");
            e.exit_code()
        }
    }
}

/// `haechi kafka produce|consume`.
pub fn kafka(c: KafkaCommand) -> anyhow::Result<i32> {
    match c {
        KafkaCommand::Produce {
            file,
            topic,
            brokers,
            rate,
        } => {
            let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?,
                ))
            };
            let lines = reader
                .split(b'\n')
                .map_while(Result::ok)
                .filter(|l| !l.is_empty());
            let n = tools::produce_lines(&brokers, &topic, lines, rate, |_, _| {})
                .with_context(|| format!("producing to {topic} on {brokers}"))?;
            eprintln!("produced {n} messages to {topic}");
            Ok(0)
        }
        KafkaCommand::Consume {
            topic,
            brokers,
            count,
            idle_secs,
            meta,
        } => {
            let msgs = tools::read_topic(
                &brokers,
                &topic,
                count,
                std::time::Duration::from_secs_f64(idle_secs),
            )
            .with_context(|| format!("reading {topic} on {brokers}"))?;
            let mut out = std::io::stdout().lock();
            for m in &msgs {
                if meta {
                    use rdkafka::message::Message;
                    let v = serde_json::json!({
                        "partition": m.partition(),
                        "offset": m.offset(),
                        "key": m.key().map(String::from_utf8_lossy),
                        "payload": tools::text(m),
                    });
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(out, "{}", tools::text(m))?;
                }
            }
            eprintln!("{} messages from {topic}", msgs.len());
            Ok(0)
        }
    }
}
