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
        c @ KafkaCommand::Bench { .. } => bench(c),
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

fn bench(c: KafkaCommand) -> anyhow::Result<i32> {
    let KafkaCommand::Bench {
        mode,
        brokers,
        expect,
        input,
        rate,
        events,
        read,
        json,
    } = c
    else {
        return Ok(2);
    };
    let report = if mode == "throughput" {
        tools::bench_throughput(
            &brokers,
            "listing-verdicts",
            expect,
            std::time::Duration::from_secs(10),
        )?
    } else {
        let input = input.context("latency needs --input FILE")?;
        let lines: Vec<Vec<u8>> = std::fs::read(&input)
            .with_context(|| format!("reading {}", input.display()))?
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .take(events)
            .map(<[u8]>::to_vec)
            .collect();
        tools::bench_latency(&brokers, "listings", &read, lines, rate)?
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let ms = |v: Option<f64>| {
            v.map(|x| format!("{x:.1} ms"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{mode}: {} verdicts in {:.2} s = {:.0} events/s; latency p50 {} p99 {} max {}",
            report.events,
            report.seconds,
            report.events_per_second,
            ms(report.p50_ms),
            ms(report.p99_ms),
            ms(report.max_ms)
        );
    }
    Ok(0)
}
