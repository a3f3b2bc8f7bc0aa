//! Command-line arguments. The contract (`shared/CONTRACT.md`) fixes the
//! command names and the engine options `--rules`, `--model`, `--policy`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "haechi",
    version,
    about = "haechi (해치): fraud and fake-listing moderation for a second-hand marketplace",
    long_about = "haechi judges every listing event of a second-hand marketplace: keyword \
automata and regex rules that see through obfuscation, a trained classifier, and the \
seller's history. Each event gets a verdict (allow, review or block) with its reasons; \
flagged listings go to a human-review queue.\n\n\
Start with `haechi replay fixtures/handpicked.jsonl --out verdicts.jsonl`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log level (error, warn, info, debug, trace); HAECHI_LOG overrides it with a full filter.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    /// Log as JSON lines (for log collectors).
    #[arg(long, global = true)]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline over a JSONL file of listing events, offline.
    ///
    /// Writes one verdict per valid event to --out (in input order) and every
    /// invalid line to the dead-letter file with its line number and reason.
    /// When the events carry labels, prints recall, precision, flag rate and
    /// recall per fraud kind.
    Replay(ReplayArgs),
    /// Check rule packs, lists and policy.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Train the classifier from labeled JSONL into a model directory.
    ///
    /// Replays the events through the real pipeline (rules, history, feature
    /// extraction), fits a logistic regression and a multinomial naive Bayes
    /// (linfa), keeps the one with the better PR-AUC on validation, and writes
    /// model.json, manifest.json and plots into --out.
    Train(TrainArgs),
    /// Evaluations on real data.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// The moderators' commands on the review queue.
    ///
    /// Works on a store directly (--data-dir, after `haechi replay --data-dir`)
    /// or through the serving process (--server, `haechi serve` or `haechi run`).
    /// Every command acts as the moderator whose token is given.
    Review(ReviewArgs),
    /// Serve the review queue of a store over HTTP for many moderators.
    Serve(ServeArgs),
    /// The Kafka stream deployment: consume `listings`, produce verdicts.
    ///
    /// Joins the consumer group, judges every listing event with the same
    /// engine as replay, produces one verdict per valid event to
    /// `listing-verdicts` and every invalid message to `listings-dlq`, applies
    /// moderator decisions from `moderation-decisions` to seller history, and
    /// opens a review case for every review/block verdict. An offset is
    /// committed only after its verdict is delivered and its history and
    /// review writes are durable (at-least-once; redeliveries are idempotent
    /// by event_id). Seller state follows its partition through the
    /// `haechi-changelog` topic, so several instances can share the work.
    ///
    /// Serves /metrics (Prometheus), /healthz, /readyz and, with moderators,
    /// the review API. SIGTERM/SIGINT: stop fetching, finish in-flight
    /// events, commit, exit 0 (3 if the drain exceeds shutdown.timeout_secs).
    ///
    /// Every setting is in the config file (see haechi.example.toml) and can
    /// be overridden by HAECHI_<SECTION>__<KEY>, e.g. HAECHI_KAFKA__BROKERS.
    Run(RunArgs),
    /// Kafka helpers for operators: produce a JSONL file, read a topic.
    #[command(subcommand)]
    Kafka(KafkaCommand),
    /// Look into a store (`--data-dir` of replay, run or serve).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// What the store holds: records and bytes per keyspace (sellers,
    /// listings, text bands, prices, review cases ...), its size on disk,
    /// format and the event times it covers.
    ///
    /// Opens the store like every command does (a log left by a crash is
    /// applied, an older store format upgraded), so it cannot run beside
    /// the process that owns it (`haechi run` or `serve`): stop it first,
    /// or look at a copy.
    Stats {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// One JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KafkaCommand {
    /// Produce a JSONL file to a topic, one message per line, key = seller_id.
    Produce {
        /// The file (`-` for stdin).
        file: PathBuf,
        #[arg(long, default_value = "listings")]
        topic: String,
        #[arg(long, default_value = "127.0.0.1:9092", env = "HAECHI_KAFKA__BROKERS")]
        brokers: String,
        /// Messages per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Print a topic's messages (payloads, one per line) from the beginning.
    Consume {
        #[arg(default_value = "listing-verdicts")]
        topic: String,
        #[arg(long, default_value = "127.0.0.1:9092", env = "HAECHI_KAFKA__BROKERS")]
        brokers: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Stop when nothing arrived for this long.
        #[arg(long, default_value_t = 3.0)]
        idle_secs: f64,
        /// Print each message as {"partition","offset","key","payload"}.
        #[arg(long)]
        meta: bool,
    },
    /// Measure a running `haechi run` (see scripts/bench-kafka.sh).
    ///
    /// `throughput`: times the verdicts of a backlog already in `listings`
    /// (first to last verdict). `latency`: produces --input at --rate and
    /// measures produce-to-verdict latency (p50, p99).
    Bench {
        #[arg(value_parser = ["throughput", "latency"])]
        mode: String,
        #[arg(long, default_value = "127.0.0.1:9092", env = "HAECHI_KAFKA__BROKERS")]
        brokers: String,
        /// throughput: how many verdicts to wait for.
        #[arg(long, default_value_t = 0)]
        expect: usize,
        /// latency: the events to produce.
        #[arg(long)]
        input: Option<PathBuf>,
        /// latency: events per second.
        #[arg(long, default_value_t = 450.0)]
        rate: f64,
        /// latency: how many events of --input to produce.
        #[arg(long, default_value_t = 9_000)]
        events: usize,
        /// latency: the topic whose messages (matched by event_id) end the
        /// clock. `--read listings` measures the broker alone: produce to
        /// read back, one hop (scripts/bench-broker-hop.sh).
        #[arg(long, default_value = "listing-verdicts")]
        read: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML; see haechi.example.toml). Without it, the
    /// defaults and the environment's HAECHI_<SECTION>__<KEY> overrides.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file + environment) and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Work on this store directly (only one process may open it).
    #[arg(long, value_name = "DIR", conflicts_with = "server", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Work through a serving process, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL", env = "HAECHI_SERVER", global = true)]
    pub server: Option<String>,
    /// Your moderator token.
    #[arg(long, env = "HAECHI_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Moderators file (names and tokens), for --data-dir.
    #[arg(
        long,
        value_name = "FILE",
        env = "HAECHI_MODERATORS",
        default_value = "moderators.toml",
        global = true
    )]
    pub moderators: PathBuf,
    #[command(subcommand)]
    pub command: ReviewCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Claim the highest-priority case (blocks first, then score, then age) and show it.
    Next {
        /// How long the claim holds if you walk away.
        #[arg(long, default_value_t = 10)]
        lease_mins: i64,
        #[arg(long)]
        json: bool,
    },
    /// List cases.
    List {
        /// open, claimed or decided.
        #[arg(long)]
        status: Option<String>,
        /// A fraud kind or rule id prefix (prepayment, ko.contact).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        seller: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one case with the matched spans highlighted.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Decide a case; durable when this reports success.
    Decide {
        id: String,
        /// approve, remove or ban-seller.
        #[arg(long)]
        action: String,
        /// A reason code (see `haechi review reasons`).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Give a claimed case back to the queue.
    Release { id: String },
    /// Queue depth and age, decisions per moderator, precision of flags per rule.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The append-only audit log.
    Audit {
        /// The last N entries (0 = all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Write decided cases as labeled JSONL for `haechi train`.
    ExportLabels {
        #[arg(long, value_name = "FILE.jsonl")]
        out: PathBuf,
    },
    /// The reason codes a decision can carry.
    Reasons,
    /// Full-screen queue: the case with highlighted spans, reasons and seller
    /// history side by side; a approve, r remove, b ban seller, s skip, q quit.
    Tui,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store to serve (the process owns it while running).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "HAECHI_LISTEN")]
    pub listen: String,
    /// Moderators file (names and tokens).
    #[arg(
        long,
        value_name = "FILE",
        env = "HAECHI_MODERATORS",
        default_value = "moderators.toml"
    )]
    pub moderators: PathBuf,
    /// Lease of a claim, in minutes.
    #[arg(long, default_value_t = 10)]
    pub lease_mins: i64,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Labeled events (JSONL with `label`).
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: PathBuf,
    /// Validation events (default: the newest 20% of --data).
    #[arg(long, value_name = "FILE.jsonl")]
    pub valid: Option<PathBuf>,
    /// The model directory to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The model's name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Text features to keep, by chi-squared with the label.
    #[arg(long, default_value_t = 3000)]
    pub max_features: usize,
    /// L2 penalties of the logistic regression to try (validation picks).
    #[arg(long, value_delimiter = ',', default_values_t = [0.01, 0.001])]
    pub alpha: Vec<f64>,
    /// Seed of the negative downsampling (same data + seed = same model).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Smoothing values of naive Bayes to try.
    #[arg(long, value_delimiter = ',', default_values_t = [0.001])]
    pub nb_alpha: Vec<f64>,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress display even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Rules directory (rule hits are features).
    #[arg(long, value_name = "DIR", default_value = "rules")]
    pub rules: PathBuf,
    /// Policy file (default: policy.toml in the rules directory).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// The SMS Spam Collection protocol (first 30% train, last 70% test)
    /// next to the paper's best result.
    Sms {
        /// The collection as CSV (id,label,text).
        #[arg(long, default_value = "fixtures/external/sms_spam.csv")]
        data: PathBuf,
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
        /// Rules directory (rule hits are features).
        #[arg(long, value_name = "DIR", default_value = "rules")]
        rules: PathBuf,
        /// Text features to keep.
        #[arg(long, default_value_t = 3000)]
        max_features: usize,
    },
}

/// The engine options every command that runs the engine accepts.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Rules directory: rule packs (*.toml), lists/ and policy.toml.
    #[arg(long, value_name = "DIR", default_value = "rules")]
    pub rules: PathBuf,
    /// Policy file (default: policy.toml in the rules directory).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Model directory (default: the committed models/default).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Run without a classifier: rules, lists and history only.
    #[arg(long, conflicts_with = "model")]
    pub no_model: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The events, one JSON object per line.
    #[arg(value_name = "FILE.jsonl")]
    pub input: PathBuf,
    /// Where the verdicts go (JSONL, one per valid event, in input order).
    #[arg(long, value_name = "VERDICTS.jsonl")]
    pub out: PathBuf,
    /// Where invalid lines go (default: next to --out, *.dead-letters.jsonl).
    #[arg(long, value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,
    /// Keep the store (seller history, review queue) in this directory
    /// instead of a fresh temporary one; `haechi review --data-dir` reads it.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the summary and evaluation as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Threads: with 2 or more, decoding and analysis run ahead on the
    /// others while one thread applies history in input order (same
    /// verdicts, byte for byte). Default: the cores available, at most 4.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Flush the store after this many pending writes (default 50,000, or
    /// every second): smaller bounds memory and the work a crash undoes.
    #[arg(long, value_name = "WRITES", env = "HAECHI_FLUSH_EVERY")]
    pub flush_every: Option<usize>,
    /// sled's page cache in MB: memory for speed (64 instead of 128: 45–65
    /// MB less peak RSS on a day of listings, 15–20% slower).
    #[arg(long, value_name = "MB", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_mb: u64,
    /// Keep the history's records (sellers, text bands, prices, identifier
    /// links) wholly in memory, and on disk in the store's history image
    /// instead of sled: faster for memory that grows with the sellers and
    /// listings (400k events: +56%, +6 MB peak RSS; 1M events from 355k
    /// sellers: +71%, +125 MB). Sticks to the store: later commands load
    /// the image; a run without it moves the history back into sled.
    #[arg(long, env = "HAECHI_RESIDENT_HISTORY")]
    pub resident_history: bool,
    /// With --resident-history: distinct history records changed before a
    /// checkpoint writes them into the history image (fewer: less memory
    /// and less log to apply after a crash, more delta files).
    #[arg(long, value_name = "KEYS", default_value_t = 64_000,
          env = "HAECHI_CHECKPOINT_KEYS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_keys: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule packs, lists and policy, and run every rule's examples.
    ///
    /// Reports duplicate ids, bad regexes, empty rules and failing examples,
    /// each with file and line; exits 1 if there is any.
    Check {
        /// The rules directory.
        #[arg(value_name = "DIR", default_value = "rules")]
        dir: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay a labeled file under two rule sets and show what changes.
    ///
    /// Prints recall, precision and flag rate before and after, the verdicts
    /// that flip, and the listings newly flagged or unflagged with the reasons
    /// that appeared or disappeared. How a rule change is reviewed before it
    /// ships.
    Backtest {
        /// The rules running now.
        #[arg(long, value_name = "DIR")]
        old: PathBuf,
        /// The proposed rules.
        #[arg(long, value_name = "DIR")]
        new: PathBuf,
        /// Labeled events (JSONL).
        #[arg(value_name = "FILE.jsonl")]
        file: PathBuf,
        /// How many newly flagged / unflagged listings to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
        /// No progress bar even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
}
