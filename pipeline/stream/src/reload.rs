//! Hot reload of rule packs, lists and policy.
//!
//! A running pipeline calls [`Reloader::check`] now and then (the Kafka run
//! loop does it every `rules_reload_secs`). The whole rules directory is read
//! and hashed; when the hash changed, the new packs are compiled and, only if
//! every file is valid, swapped in atomically. A broken pack is rejected with
//! its file and line and the previous engine keeps running — a bad edit can
//! never take the filter down, as in rspamd's maps.

use crate::load::{read_rules, LoadError};
use arc_swap::ArcSwap;
use haechi_engine::rules::RuleErrors;
use haechi_engine::{Engine, RuleSources};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// Nothing changed on disk.
    Unchanged,
    /// New rules are running.
    Reloaded { from: String, to: String },
    /// The rules on disk are broken; the previous ones keep running.
    Rejected { version: String, errors: String },
}

type Builder = dyn Fn(&RuleSources) -> Result<Engine, RuleErrors> + Send + Sync;

/// Holds the running engine and swaps in new rules when they are valid.
pub struct Reloader {
    dir: PathBuf,
    policy: Option<PathBuf>,
    current: ArcSwap<Engine>,
    build: Box<Builder>,
    /// The last version that was rejected, so it is reported once.
    rejected: Mutex<Option<String>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("dir", &self.dir)
            .field("version", &self.current.load().versions().rules)
            .finish()
    }
}

impl Reloader {
    /// Starts with an engine already built from `dir`; `build` turns new rule
    /// sources into an engine (adding the model, for instance).
    pub fn new(
        dir: PathBuf,
        policy: Option<PathBuf>,
        engine: Engine,
        build: impl Fn(&RuleSources) -> Result<Engine, RuleErrors> + Send + Sync + 'static,
    ) -> Reloader {
        Reloader {
            dir,
            policy,
            current: ArcSwap::from_pointee(engine),
            build: Box::new(build),
            rejected: Mutex::new(None),
        }
    }

    /// The engine to use for the next event.
    pub fn engine(&self) -> Arc<Engine> {
        self.current.load_full()
    }

    /// Looks at the rules on disk and swaps them in if they changed and are valid.
    pub fn check(&self) -> ReloadOutcome {
        let sources = match read_rules(&self.dir, self.policy.as_deref()) {
            Ok(s) => s,
            Err(LoadError::Io {
                path,
                error: source,
            }) => {
                return self.reject(
                    "unreadable".into(),
                    format!("cannot read {}: {source}", path.display()),
                )
            }
            Err(e @ (LoadError::Invalid(_) | LoadError::Model { .. })) => {
                return self.reject("invalid".into(), e.to_string())
            }
        };
        let version = sources.version();
        let running = self.current.load().versions().rules.clone();
        if version == running {
            return ReloadOutcome::Unchanged;
        }
        if self
            .rejected
            .lock()
            .map(|r| r.as_deref() == Some(&version))
            .unwrap_or(false)
        {
            return ReloadOutcome::Unchanged;
        }
        match (self.build)(&sources) {
            Ok(engine) => {
                self.current.store(Arc::new(engine));
                if let Ok(mut r) = self.rejected.lock() {
                    *r = None;
                }
                tracing::info!(from = %running, to = %version, "rules reloaded");
                ReloadOutcome::Reloaded {
                    from: running,
                    to: version,
                }
            }
            Err(e) => self.reject(version, e.to_string()),
        }
    }

    fn reject(&self, version: String, errors: String) -> ReloadOutcome {
        tracing::error!(%version, running = %self.current.load().versions().rules, "rules rejected, previous rules keep running:\n{errors}");
        if let Ok(mut r) = self.rejected.lock() {
            *r = Some(version.clone());
        }
        ReloadOutcome::Rejected { version, errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = r#"
[pack]
id = "t"
[[rule]]
id = "t.kakao"
kind = "off_platform_contact"
weight = 2.0
keywords = ["카톡"]
"#;

    fn engine_for(dir: &std::path::Path) -> Engine {
        Engine::from_sources(&read_rules(dir, None).unwrap()).unwrap()
    }

    #[test]
    fn valid_changes_swap_in_and_broken_ones_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), PACK).unwrap();
        let r = Reloader::new(
            dir.path().to_owned(),
            None,
            engine_for(dir.path()),
            Engine::from_sources,
        );
        let v0 = r.engine().versions().rules.clone();
        assert_eq!(r.check(), ReloadOutcome::Unchanged);

        // A valid edit: new keyword, new version, swapped in.
        std::fs::write(
            dir.path().join("p.toml"),
            PACK.replace("[\"카톡\"]", "[\"카톡\", \"텔레그램\"]"),
        )
        .unwrap();
        let ReloadOutcome::Reloaded { from, to } = r.check() else {
            panic!("expected a reload")
        };
        assert_eq!(from, v0);
        assert_eq!(r.engine().versions().rules, to);
        assert_eq!(r.engine().rules().keyword_count(), 2);

        // A broken edit: rejected with file and line, the previous rules keep running.
        std::fs::write(
            dir.path().join("p.toml"),
            PACK.replace("keywords = [\"카톡\"]", "regex = ['(unclosed']"),
        )
        .unwrap();
        let ReloadOutcome::Rejected { errors, .. } = r.check() else {
            panic!("expected a rejection")
        };
        assert!(errors.contains("p.toml:8:"), "{errors}");
        assert_eq!(r.engine().versions().rules, to);
        assert_eq!(r.engine().rules().keyword_count(), 2);
        // Reported once, not on every check.
        assert_eq!(r.check(), ReloadOutcome::Unchanged);

        // Fixed again: reloaded.
        std::fs::write(dir.path().join("p.toml"), PACK).unwrap();
        assert!(matches!(r.check(), ReloadOutcome::Reloaded { .. }));
        assert_eq!(r.engine().versions().rules, v0);
    }
}
