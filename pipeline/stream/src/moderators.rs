//! Moderator identities: names and tokens from a TOML file.
//!
//! ```toml
//! [[moderator]]
//! name = "kim"
//! token = "long-random-secret"
//! ```
//!
//! Every review action is made as a named moderator, proven by a token;
//! unknown tokens are refused and the audit log records the name.

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    moderator: Vec<Entry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token: String,
}

/// The known moderators.
#[derive(Debug, Clone, Default)]
pub struct Moderators {
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModeratorsError {
    #[error("cannot read moderators file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("moderators file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Moderators {
    pub fn load(path: &Path) -> Result<Moderators, ModeratorsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModeratorsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Moderators::parse(&text).map_err(|message| ModeratorsError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Moderators, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        for e in &f.moderator {
            if e.name.trim().is_empty() || e.token.len() < 8 {
                return Err(format!(
                    "moderator {:?}: a name and a token of at least 8 characters are required",
                    e.name
                ));
            }
        }
        let mut names: Vec<&str> = f.moderator.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("moderator names must be unique".into());
        }
        Ok(Moderators {
            entries: f.moderator,
        })
    }

    /// The moderator a token belongs to.
    pub fn identify(&self, token: &str) -> Option<&str> {
        // Compare every entry fully, so timing does not tell which matched.
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(e.token.as_bytes(), token.as_bytes()) {
                found = Some(e.name.as_str());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_identify_moderators() {
        let m = Moderators::parse("[[moderator]]\nname = \"kim\"\ntoken = \"secret-kim-1\"\n[[moderator]]\nname = \"lee\"\ntoken = \"secret-lee-2\"\n").unwrap();
        assert_eq!(m.identify("secret-lee-2"), Some("lee"));
        assert_eq!(m.identify("secret-lee-3"), None);
        assert!(Moderators::parse("[[moderator]]\nname = \"x\"\ntoken = \"short\"\n").is_err());
    }
}
