//! The Kafka deployment: `haechi run --config haechi.toml`.
//!
//! * [`worker`]: the consumer loop (its own thread): batches, judging,
//!   delivery, durability, offsets, rebalances, changelog restore.
//! * [`config`]: the configuration file and its environment overrides.
//! * [`obs`]: Prometheus metrics and the health state.
//!
//! This module wires them: it loads the engine (with hot reload), opens the
//! store with change capture, serves `/metrics`, `/healthz`, `/readyz` and,
//! with moderators, the review API on a small tokio runtime, turns
//! SIGTERM/SIGINT into a bounded drain, and runs the loop.

pub mod config;
pub mod obs;
pub mod tools;
pub mod worker;

pub use config::{ConfigError, RunConfig};

use crate::load::{load_full, LoadError};
use crate::moderators::Moderators;
use crate::reload::Reloader;
use crate::review_api::{router, ReviewState};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use haechi_engine::Engine;
use haechi_store::{Store, StoreError};
use obs::Health;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use worker::{Worker, WorkerError};

/// Why `haechi run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading rules and model: {0}")]
    Load(#[from] LoadError),
    #[error("opening the store in {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("{0}")]
    Setup(String),
}

impl RunError {
    /// The process exit status: 3 for a drain that ran out of time, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Worker(WorkerError::ShutdownTimeout(_)) => 3,
            _ => 1,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Events judged (redeliveries not counted).
    pub events: u64,
}

fn reloader(cfg: &RunConfig) -> Result<Reloader, RunError> {
    let e = &cfg.engine;
    let engine = load_full(
        &e.rules,
        e.policy.as_deref(),
        e.model.as_deref(),
        e.no_model,
    )?;
    let model = engine.model().cloned();
    Ok(Reloader::new(
        e.rules.clone(),
        e.policy.clone(),
        engine,
        move |sources| Engine::from_sources(sources).map(|e| e.with_model(model.clone())),
    ))
}

/// Runs until SIGTERM/SIGINT (then drains within `shutdown.timeout_secs`).
pub fn run(cfg: RunConfig) -> Result<RunSummary, RunError> {
    let metrics = obs::install().map_err(RunError::Setup)?;
    let reloader = Arc::new(reloader(&cfg)?);
    let store = Arc::new(
        Store::open_with(&cfg.store.data_dir, cfg.store.history()).map_err(|source| {
            RunError::Store {
                path: cfg.store.data_dir.display().to_string(),
                source,
            }
        })?,
    );
    store.track_keys().map_err(|source| RunError::Store {
        path: cfg.store.data_dir.display().to_string(),
        source,
    })?;
    store.enable_changelog();
    let health = Arc::new(Health::default());
    health.beat();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("haechi-http")
        .build()
        .map_err(|e| RunError::Setup(format!("tokio runtime: {e}")))?;

    // Signals: the first asks for a drain; the deadline is enforced by the
    // loop (and, should it hang, by the watchdog below).
    {
        let health = health.clone();
        let timeout = Duration::from_secs(cfg.shutdown.timeout_secs);
        rt.spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: draining (at most {timeout:?})");
            health.stopping.store(true, Ordering::Relaxed);
            tokio::time::sleep(timeout + Duration::from_secs(2)).await;
            tracing::error!("drain did not finish in {timeout:?}: exiting; uncommitted events will be redelivered");
            std::process::exit(3);
        });
    }

    if !cfg.http.listen.is_empty() {
        let app = http_router(&cfg, metrics, health.clone(), store.clone())?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(&cfg.http.listen))
            .map_err(|e| RunError::Setup(format!("listening on {}: {e}", cfg.http.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| RunError::Setup(e.to_string()))?;
        tracing::info!(%addr, "metrics on /metrics, health on /healthz and /readyz");
        rt.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http server stopped");
            }
        });
    }

    let handle = rt.handle().clone();
    let summary = std::thread::scope(|s| {
        s.spawn(|| -> Result<RunSummary, RunError> {
            let mut w = Worker::new(&cfg, &store, &reloader, &health, handle)?;
            tracing::info!(
                brokers = %cfg.kafka.brokers,
                group = %cfg.kafka.group_id,
                topic = %cfg.kafka.listings_topic,
                rules = %reloader.engine().versions().rules,
                model = %reloader.engine().versions().model,
                "haechi run: consuming"
            );
            w.run()?;
            Ok(RunSummary { events: w.events })
        })
        .join()
        .map_err(|_| RunError::Setup("the consumer loop panicked".into()))?
    })?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(summary)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn http_router(
    cfg: &RunConfig,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    health: Arc<Health>,
    store: Arc<Store>,
) -> Result<Router, RunError> {
    let live = health.clone();
    let mut app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route(
            "/healthz",
            get(move || {
                std::future::ready(if live.live() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "consumer loop stuck")
                })
            }),
        )
        .route(
            "/readyz",
            get(move || {
                std::future::ready(if health.is_ready() {
                    (StatusCode::OK, "ready")
                } else if health.stopping() {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no partitions restored yet",
                    )
                })
            }),
        );
    if let Some(path) = &cfg.http.moderators {
        let moderators = Moderators::load(path).map_err(|e| RunError::Setup(e.to_string()))?;
        if moderators.is_empty() {
            return Err(RunError::Setup(format!(
                "{} names no moderator",
                path.display()
            )));
        }
        let review = router(ReviewState {
            store,
            moderators: Arc::new(moderators),
            lease_ms: cfg.http.lease_mins * 60_000,
        });
        app = app.merge(review);
    }
    Ok(app)
}
