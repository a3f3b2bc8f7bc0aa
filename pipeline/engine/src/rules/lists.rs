//! Lists of identifiers: the known-bad (phones, bank accounts, messenger IDs,
//! domains reported by victims, the kind of data TheCheat collects) and the
//! platform's own legitimate domains.
//!
//! A list is a text file in `rules/lists/`, one entry per line, `#` starts a
//! comment. The file name says what it holds:
//!
//! | file                     | entries                          |
//! |--------------------------|----------------------------------|
//! | `bad_phones.txt`         | phone numbers, any punctuation   |
//! | `bad_accounts.txt`       | bank account numbers             |
//! | `bad_messenger_ids.txt`  | `service:id` (`kakao:abc`, `telegram:abc`) |
//! | `bad_domains.txt`        | hosts; subdomains match too      |
//! | `platform_domains.txt`   | the platform's own hosts         |
//!
//! Entries are canonicalized exactly as the extractors canonicalize text, so
//! `010-1234-5678` in a list matches `공일공 1234 5678` in a listing.

use super::{RuleError, RuleErrors, Source};
use crate::extract::{Facts, Ident, IdentKind};
use std::collections::{HashMap, HashSet};

/// The compiled lists.
#[derive(Debug, Clone, Default)]
pub struct Lists {
    bad: HashMap<IdentKind, HashSet<String>>,
    platform: HashSet<String>,
}

/// An extracted identifier found on a known-bad list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListHit {
    pub list: &'static str,
    pub ident: Ident,
}

fn list_kind(path: &str) -> Option<(Option<IdentKind>, &'static str)> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    Some(match name {
        "bad_phones.txt" => (Some(IdentKind::Phone), "bad_phones"),
        "bad_accounts.txt" => (Some(IdentKind::BankAccount), "bad_accounts"),
        "bad_messenger_ids.txt" => (Some(IdentKind::MessengerId), "bad_messenger_ids"),
        "bad_domains.txt" => (Some(IdentKind::Domain), "bad_domains"),
        "platform_domains.txt" => (None, "platform_domains"),
        _ => return None,
    })
}

fn canonical(kind: Option<IdentKind>, entry: &str) -> Result<String, String> {
    let digits: String = entry.chars().filter(|c| c.is_ascii_digit()).collect();
    match kind {
        Some(IdentKind::Phone) if (9..=12).contains(&digits.len()) => Ok(digits),
        Some(IdentKind::Phone) => Err(format!("{entry:?} is not a phone number")),
        Some(IdentKind::BankAccount) if (10..=14).contains(&digits.len()) => Ok(digits),
        Some(IdentKind::BankAccount) => Err(format!("{entry:?} is not a 10-14 digit account")),
        Some(IdentKind::MessengerId) => match entry.split_once(':') {
            Some((s, id)) if !s.is_empty() && !crate::extract::canonical_id(id).is_empty() => Ok(
                format!("{}:{}", s.to_lowercase(), crate::extract::canonical_id(id)),
            ),
            _ => Err(format!("{entry:?} is not `service:id`")),
        },
        Some(IdentKind::Domain) | None => {
            let host = entry.trim_start_matches("www.").to_lowercase();
            if host.contains('.') && !host.contains(char::is_whitespace) {
                Ok(host)
            } else {
                Err(format!("{entry:?} is not a host name"))
            }
        }
    }
}

/// Does `host` equal `domain` or lie under it?
fn under(host: &str, domain: &str) -> bool {
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

impl Lists {
    /// Parses list files; unknown file names and malformed entries are errors
    /// with file and line.
    pub fn parse(sources: &[Source]) -> Result<Lists, RuleErrors> {
        let mut lists = Lists::default();
        let mut errors = Vec::new();
        for src in sources {
            let Some((kind, _)) = list_kind(&src.path) else {
                errors.push(RuleError {
                    file: src.path.clone(),
                    line: 1,
                    message: "unknown list file name (see rules/README.md for the list files)"
                        .into(),
                });
                continue;
            };
            for (i, line) in src.text.lines().enumerate() {
                let entry = line.split('#').next().unwrap_or("").trim();
                if entry.is_empty() {
                    continue;
                }
                match canonical(kind, entry) {
                    Ok(v) => {
                        match kind {
                            Some(k) => lists.bad.entry(k).or_default().insert(v),
                            None => lists.platform.insert(v),
                        };
                    }
                    Err(message) => errors.push(RuleError {
                        file: src.path.clone(),
                        line: i + 1,
                        message,
                    }),
                }
            }
        }
        if errors.is_empty() {
            Ok(lists)
        } else {
            Err(RuleErrors(errors))
        }
    }

    pub fn len(&self) -> usize {
        self.bad.values().map(HashSet::len).sum::<usize>() + self.platform.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_platform_domain(&self, host: &str) -> bool {
        self.platform.iter().any(|d| under(host, d))
    }

    /// Marks `facts.foreign_url` and `facts.listed`, and returns the list hits.
    pub fn apply(&self, facts: &mut Facts) -> Vec<ListHit> {
        let mut hits = Vec::new();
        for ident in &facts.idents {
            if ident.kind == IdentKind::Domain && !self.is_platform_domain(&ident.value) {
                facts.foreign_url = true;
            }
            let Some(set) = self.bad.get(&ident.kind) else {
                continue;
            };
            let listed = match ident.kind {
                IdentKind::Domain => set.iter().any(|d| under(&ident.value, d)),
                _ => set.contains(&ident.value),
            };
            if listed {
                hits.push(ListHit {
                    list: match ident.kind {
                        IdentKind::Phone => "bad_phones",
                        IdentKind::BankAccount => "bad_accounts",
                        IdentKind::MessengerId => "bad_messenger_ids",
                        IdentKind::Domain => "bad_domains",
                    },
                    ident: ident.clone(),
                });
            }
        }
        facts.listed = !hits.is_empty();
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::extract;
    use crate::normalize::normalize;

    fn src(path: &str, text: &str) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn listed_identifiers_are_found_through_obfuscation() {
        let lists = Lists::parse(&[
            src(
                "lists/bad_phones.txt",
                "# reported\n010-9999-0000  # victim 2026-10\n",
            ),
            src("lists/bad_domains.txt", "safe-pay.kr\n"),
            src("lists/platform_domains.txt", "daangn.com\n"),
        ])
        .unwrap();
        let mut f = extract(
            &normalize(""),
            &normalize("공일공 9999 0000 / pay.safe-pay.kr / www.daangn.com"),
        );
        let hits = lists.apply(&mut f);
        let mut names: Vec<_> = hits.iter().map(|h| h.list).collect();
        names.sort();
        assert_eq!(names, ["bad_domains", "bad_phones"]);
        assert!(f.listed && f.foreign_url);
    }

    #[test]
    fn platform_links_are_not_foreign() {
        let lists = Lists::parse(&[src("platform_domains.txt", "daangn.com")]).unwrap();
        let mut f = extract(
            &normalize(""),
            &normalize("https://www.daangn.com/articles/1"),
        );
        assert!(lists.apply(&mut f).is_empty());
        assert!(!f.foreign_url);
    }

    #[test]
    fn bad_entries_name_file_and_line() {
        let err = Lists::parse(&[src("lists/bad_phones.txt", "01012345678\n12\n")]).unwrap_err();
        assert_eq!(err.0[0].line, 2);
        assert!(err.0[0].to_string().starts_with("lists/bad_phones.txt:2:"));
        assert!(Lists::parse(&[src("lists/whatever.txt", "")]).is_err());
    }
}
