//! Reading the engine's data from disk: rule packs, lists and the policy.
//!
//! Layout of a rules directory (see `rules/README.md`):
//!
//! ```text
//! rules/
//!   policy.toml          the default policy (`--policy FILE` overrides)
//!   ko/*.toml, en/*.toml rule packs (any *.toml below the directory)
//!   lists/*.txt          identifier lists
//! ```

use haechi_engine::model::Model;
use haechi_engine::rules::{RuleErrors, Source};
use haechi_engine::{Engine, RuleSources};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the engine's data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // `error`, not `source`: the message already carries it, and a source
    // would print it twice in an error chain.
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] RuleErrors),
    #[error("model {path}: {error}")]
    Model {
        path: PathBuf,
        error: haechi_engine::model::ModelError,
    },
}

fn read(path: &Path) -> Result<Source, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        error: source,
    })?;
    Ok(Source {
        path: path.display().to_string(),
        text,
    })
}

fn walk(dir: &Path, ext: &str, skip: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_owned(),
        error: source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io {
            path: dir.to_owned(),
            error: source,
        })?;
        let path = entry.path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            walk(&path, ext, skip, out)?;
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every rule pack, list and the policy of a rules directory.
pub fn read_rules(dir: &Path, policy: Option<&Path>) -> Result<RuleSources, LoadError> {
    let lists_dir = dir.join("lists");
    let default_policy = dir.join("policy.toml");
    let mut packs = Vec::new();
    walk(dir, "toml", &lists_dir, &mut packs)?;
    packs.retain(|p| p != &default_policy);
    packs.sort();
    let mut lists = Vec::new();
    if lists_dir.is_dir() {
        walk(&lists_dir, "txt", Path::new(""), &mut lists)?;
        lists.sort();
    }
    let policy = match policy {
        Some(p) => Some(read(p)?),
        None if default_policy.is_file() => Some(read(&default_policy)?),
        None => None,
    };
    Ok(RuleSources {
        root: dir.display().to_string(),
        packs: packs.iter().map(|p| read(p)).collect::<Result<_, _>>()?,
        lists: lists.iter().map(|p| read(p)).collect::<Result<_, _>>()?,
        policy,
    })
}

/// Reads and checks a model directory (its `model.json`).
pub fn load_model(dir: &Path) -> Result<Arc<Model>, LoadError> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        error: source,
    })?;
    Model::from_json(&text)
        .map(Arc::new)
        .map_err(|source| LoadError::Model {
            path,
            error: source,
        })
}

/// Reads and compiles the engine, with the model in `model` if given.
pub fn load_engine(rules: &Path, policy: Option<&Path>) -> Result<Engine, LoadError> {
    let sources = read_rules(rules, policy)?;
    Ok(Engine::from_sources(&sources)?)
}

/// The committed default model.
pub const DEFAULT_MODEL: &str = "models/default";

/// Rules, policy and model as the command line names them: `model` is a
/// model directory, or `None` for the default one (`models/default`, when it
/// exists), and `no_model` runs rules and history only.
pub fn load_full(
    rules: &Path,
    policy: Option<&Path>,
    model: Option<&Path>,
    no_model: bool,
) -> Result<Engine, LoadError> {
    let engine = load_engine(rules, policy)?;
    let model = match (model, no_model) {
        (_, true) => None,
        (Some(dir), false) => Some(load_model(dir)?),
        (None, false) if Path::new(DEFAULT_MODEL).join("model.json").is_file() => {
            Some(load_model(Path::new(DEFAULT_MODEL))?)
        }
        (None, false) => None,
    };
    Ok(engine.with_model(model))
}
