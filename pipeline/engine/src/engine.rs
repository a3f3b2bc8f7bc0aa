//! The engine: rules, lists, policy (and, when present, the model) put
//! together, turning a listing and a history snapshot into a verdict.

use crate::contract::{Action, EventKind, Listing, Reason, ReasonSource, Verdict, Versions};
use crate::extract::{extract, Facts};
use crate::history::{self, SellerSnapshot};
use crate::normalize::{normalize, Normalized};
use crate::policy::Policy;
use crate::rules::{fill_span_text, ListHit, Lists, RuleErrors, RuleHit, RuleSet, Source};
use std::collections::HashMap;

/// Everything that depends on the listing alone: safe to compute on any
/// thread, in any order, before the seller's history is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Text rules and composites that fired.
    pub hits: Vec<RuleHit>,
    pub facts: Facts,
    pub list_hits: Vec<ListHit>,
    /// SimHash of the compact title + body (near-duplicate detection).
    pub fingerprint: u64,
    /// The product, for its usual price (see [`history::product_key`]).
    pub product_key: String,
}

/// What the rule stage saw and found.
#[derive(Debug, Clone)]
pub struct RuleStage {
    pub title: Normalized,
    pub body: Normalized,
    pub hits: Vec<RuleHit>,
    pub facts: Facts,
    pub list_hits: Vec<ListHit>,
}

/// The rule, list and policy files of a rules directory, as text.
#[derive(Debug, Clone, Default)]
pub struct RuleSources {
    /// The directory the paths start with; stripped when hashing, so the
    /// version does not depend on where the checkout lives.
    pub root: String,
    pub packs: Vec<Source>,
    pub lists: Vec<Source>,
    pub policy: Option<Source>,
}

impl RuleSources {
    /// A content hash of everything: the `rules` version in every verdict.
    pub fn version(&self) -> String {
        let mut all: Vec<&Source> = self
            .packs
            .iter()
            .chain(&self.lists)
            .chain(&self.policy)
            .collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        let mut h = blake3::Hasher::new();
        for s in all {
            // Paths relative to the rules directory keep the hash independent
            // of where the checkout lives.
            let rel = s.path.strip_prefix(self.root.as_str()).unwrap_or(&s.path);
            h.update(rel.trim_start_matches(['/', '\\']).as_bytes());
            h.update(&[0]);
            h.update(s.text.as_bytes());
            h.update(&[0]);
        }
        let hex = h.finalize().to_hex();
        format!("r-{}", &hex[..12])
    }
}

/// A ready-to-run engine.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: RuleSet,
    lists: Lists,
    policy: Policy,
    versions: Versions,
}

impl Engine {
    /// Compiles rules, lists and policy. Every problem is reported with its
    /// file and line.
    pub fn from_sources(sources: &RuleSources) -> Result<Engine, RuleErrors> {
        let mut errors = Vec::new();
        let rules = RuleSet::compile(&sources.packs).map_err(|e| errors.extend(e.0));
        let lists = Lists::parse(&sources.lists).map_err(|e| errors.extend(e.0));
        let policy = match &sources.policy {
            Some(p) => Policy::parse(p).map_err(|e| errors.extend(e.0)),
            None => Ok(Policy::default()),
        };
        match (rules, lists, policy) {
            (Ok(rules), Ok(lists), Ok(policy)) => Ok(Engine {
                rules,
                lists,
                policy,
                versions: Versions {
                    rules: sources.version(),
                    model: "none".into(),
                },
            }),
            _ => Err(RuleErrors(errors)),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn lists(&self) -> &Lists {
        &self.lists
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// The rule stage alone: normalization, text rules, extractors, lists
    /// and composites.
    pub fn rule_stage(&self, listing: &Listing) -> RuleStage {
        let title = normalize(&listing.title);
        let body = normalize(&listing.body);
        let mut hits = self.rules.match_text(&title, &body);
        let mut facts = extract(&title, &body);
        let list_hits = self.lists.apply(&mut facts);
        let composites =
            self.rules
                .match_composites(&hits, &facts, listing.category.as_deref(), listing.price);
        hits.extend(composites);
        RuleStage {
            title,
            body,
            hits,
            facts,
            list_hits,
        }
    }

    /// The half of the decision that depends only on the listing.
    pub fn analyze(&self, listing: &Listing) -> Analysis {
        let RuleStage {
            title,
            body,
            mut hits,
            facts,
            list_hits,
        } = self.rule_stage(listing);
        for h in &mut hits {
            fill_span_text(&mut h.spans, &listing.title, &listing.body);
        }
        let mut both =
            String::with_capacity(title.compact.as_str().len() + body.compact.as_str().len());
        both.push_str(title.compact.as_str());
        both.push_str(body.compact.as_str());
        Analysis {
            hits,
            facts,
            list_hits,
            fingerprint: history::simhash(&both),
            product_key: history::product_key(title.folded.as_str(), listing.category.as_deref()),
        }
    }

    /// Combines an analysis with the seller's history snapshot.
    pub fn decide(&self, listing: &Listing, a: &Analysis, snap: &SellerSnapshot) -> Verdict {
        let mut reasons = self.rule_reasons(a);
        for lh in &a.list_hits {
            let mut span = lh.ident.span.clone();
            fill_span_text(
                std::slice::from_mut(&mut span),
                &listing.title,
                &listing.body,
            );
            reasons.push(Reason {
                source: ReasonSource::List,
                id: format!("list.{}", lh.list),
                detail: format!(
                    "{} {} is on the known-bad list {}",
                    lh.ident.kind.as_str(),
                    lh.ident.value,
                    lh.list
                ),
                weight: self.policy.lists.weight,
                spans: vec![span],
            });
        }
        let contact = history::has_contact(&a.facts.idents);
        reasons.extend(history::signals(
            listing,
            contact,
            snap,
            &self.policy.history,
        ));

        let logit = self.policy.score.prior + reasons.iter().map(|r| r.weight).sum::<f64>();
        let score = self.policy.score(logit);
        let mut action = if score >= self.policy.thresholds.block {
            Action::Block
        } else if score >= self.policy.thresholds.review {
            Action::Review
        } else {
            Action::Allow
        };
        if listing.event == EventKind::Deleted {
            action = Action::Allow;
            reasons.push(Reason {
                source: ReasonSource::Policy,
                id: "policy.deleted".into(),
                detail: "the seller deleted the listing: nothing left to moderate".into(),
                weight: 0.0,
                spans: Vec::new(),
            });
        }
        for r in &mut reasons {
            r.weight = round(r.weight, 1e3);
        }
        reasons.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));
        Verdict {
            event_id: listing.event_id.clone(),
            listing_id: listing.listing_id.clone(),
            seller_id: listing.seller_id.clone(),
            action,
            score: round(score, 1e4),
            reasons,
            versions: self.versions.clone(),
        }
    }

    /// The whole decision: [`Engine::analyze`] then [`Engine::decide`].
    pub fn evaluate(&self, listing: &Listing, snap: &SellerSnapshot) -> Verdict {
        self.decide(listing, &self.analyze(listing), snap)
    }

    /// Rule reasons with each kind's positive weights scaled down to the cap.
    fn rule_reasons(&self, a: &Analysis) -> Vec<Reason> {
        let mut per_kind: HashMap<&str, f64> = HashMap::new();
        for h in &a.hits {
            if let Some(r) = self.rules.rule(h.rule) {
                if r.weight > 0.0 {
                    *per_kind.entry(r.kind.as_str()).or_default() += r.weight;
                }
            }
        }
        let cap = self.policy.rules.per_kind_cap;
        a.hits
            .iter()
            .filter_map(|h| {
                let r = self.rules.rule(h.rule)?;
                let total = per_kind.get(r.kind.as_str()).copied().unwrap_or(0.0);
                let weight = if r.weight > 0.0 && total > cap {
                    r.weight * cap / total
                } else {
                    r.weight
                };
                let detail = if r.description.is_empty() {
                    r.kind.replace('_', " ")
                } else {
                    r.description.clone()
                };
                Some(Reason {
                    source: ReasonSource::Rule,
                    id: r.id.clone(),
                    detail,
                    weight,
                    spans: h.spans.clone(),
                })
            })
            .collect()
    }
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}
