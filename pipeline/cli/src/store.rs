//! `haechi store stats`.

use crate::args::StoreCommand;
use anyhow::Context;
use haechi_store::{Store, StoreStats};
use std::io::IsTerminal;

pub fn run(c: StoreCommand) -> anyhow::Result<i32> {
    match c {
        StoreCommand::Stats { data_dir, json } => {
            if !data_dir.is_dir() {
                anyhow::bail!("no store at {}", data_dir.display());
            }
            let store = Store::open(&data_dir)
                .with_context(|| format!("opening the store at {}", data_dir.display()))?;
            let tty = !json && std::io::stderr().is_terminal();
            let stats = store.stats(|n| {
                if tty {
                    eprint!("\r{n} records read…");
                }
            })?;
            if tty {
                eprint!("\r\x1b[K");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", table(&stats));
            }
            Ok(0)
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The stats as a table for people.
fn table(s: &StoreStats) -> String {
    let mut out = format!(
        "store format {}, {} on disk\nevents from {} to {}; last compaction counted from {}\n\n",
        s.format,
        mb(s.size_on_disk),
        s.first_event.as_deref().unwrap_or("-"),
        s.last_event.as_deref().unwrap_or("-"),
        s.compacted_day.as_deref().unwrap_or("(none yet)"),
    );
    out += &format!(
        "{:<40} {:>12} {:>12} {:>12} {:>10}\n",
        "keyspace", "records", "bytes", "B/record", "largest B"
    );
    let (mut records, mut bytes) = (0, 0);
    for k in &s.keyspaces {
        records += k.records;
        bytes += k.bytes;
        out += &format!(
            "{:<40} {:>12} {:>12} {:>12} {:>10}\n",
            format!("{} ({})", k.name, k.prefix),
            k.records,
            mb(k.bytes),
            k.bytes / k.records.max(1),
            k.largest
        );
    }
    out += &format!(
        "{:<40} {:>12} {:>12}\n",
        "all (uncompressed; sled's files hold more)",
        records,
        mb(bytes)
    );
    out
}
