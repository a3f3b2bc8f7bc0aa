//! The engine: rules, lists, policy (and, when present, the model) put
//! together, turning a listing and a history snapshot into a verdict.

use crate::contract::{Action, EventKind, Listing, Reason, ReasonSource, Verdict, Versions};
use crate::extract::{extract, Facts};
use crate::features::{dense_features, dense_name, text_features, Features, NamesOf};
use crate::history::{self, SellerSnapshot};
use crate::model::{sigmoid, Model};
use crate::normalize::{normalize, Normalized};
use crate::policy::Policy;
use crate::rules::{fill_span_text, ListHit, Lists, RuleErrors, RuleHit, RuleSet, Source};
use std::collections::HashMap;
use std::sync::Arc;

/// Everything that depends on the listing alone: safe to compute on any
/// thread, in any order, before the seller's history is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Text rules and composites that fired.
    pub hits: Vec<RuleHit>,
    pub facts: Facts,
    pub list_hits: Vec<ListHit>,
    /// MinHash band keys of the compact title + body (near-duplicate text
    /// across sellers; see [`history::minhash_bands`]).
    pub bands: Vec<u64>,
    /// The text's fingerprint ([`history::text_fingerprint`] of `bands`):
    /// the seller's own reposts.
    pub fingerprint: Option<u64>,
    /// The product, for its usual price (see [`history::product_key`]).
    pub product_key: String,
    /// The classifier's text features (empty when no model is loaded and
    /// features were not asked for).
    pub text_features: Features,
    /// The model's [`Model::text_part`] of `text_features`, with the id of
    /// the model that computed it (a model reloaded between analysis and
    /// decision computes its own).
    pub text_score: Option<(u64, f64)>,
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
    model: Option<Arc<Model>>,
    /// Compute model features even without a model (training).
    features: bool,
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
                model: None,
                features: false,
            }),
            _ => Err(RuleErrors(errors)),
        }
    }

    /// The same engine with this classifier (or none).
    pub fn with_model(mut self, model: Option<Arc<Model>>) -> Engine {
        self.versions.model = model
            .as_ref()
            .map_or_else(|| "none".to_owned(), |m| m.version.clone());
        self.model = model;
        self
    }

    /// The same engine computing model features even without a model: what
    /// training runs, so that training and serving share one code path.
    pub fn with_features(mut self) -> Engine {
        self.features = true;
        self
    }

    pub fn model(&self) -> Option<&Arc<Model>> {
        self.model.as_ref()
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
        let text_features = if self.model.is_some() || self.features {
            text_features(&title, &body, &hits, &facts, &self.rules, &mut ())
        } else {
            Features::default()
        };
        let mut both =
            String::with_capacity(title.compact.as_str().len() + body.compact.as_str().len());
        both.push_str(title.compact.as_str());
        both.push_str(body.compact.as_str());
        let bands = history::minhash_bands(&both);
        let text_score = self
            .model
            .as_ref()
            .map(|m| (m.id, m.text_part(&text_features)));
        Analysis {
            text_score,
            hits,
            facts,
            list_hits,
            fingerprint: history::text_fingerprint(&bands),
            bands,
            product_key: history::product_key(title.folded.as_str(), listing.category.as_deref()),
            text_features,
        }
    }

    /// The classifier's input for a listing: its text features (from the
    /// analysis) and its dense features (from the history snapshot).
    pub fn model_input(
        &self,
        listing: &Listing,
        a: &Analysis,
        snap: &SellerSnapshot,
    ) -> (Features, Features) {
        (
            a.text_features.clone(),
            dense_features(listing, &a.facts, snap),
        )
    }

    /// The model's reason: its probability as log-odds, capped by the policy.
    fn model_reason(
        &self,
        listing: &Listing,
        a: &Analysis,
        snap: &SellerSnapshot,
    ) -> Option<(Reason, Features)> {
        let model = self.model.as_ref()?;
        let dense = dense_features(listing, &a.facts, snap);
        let logit = match &a.text_score {
            Some((id, part)) if *id == model.id => model.with_dense(*part, &dense),
            _ => model.logit(&a.text_features, &dense),
        };
        let p = sigmoid(logit);
        let m = &self.policy.model;
        // The model's evidence: its log-odds above its own base rate.
        let weight =
            (m.weight * (logit - crate::model::logit(model.base_rate))).clamp(m.floor, m.cap);
        Some((
            Reason {
                source: ReasonSource::Model,
                id: format!("model.{}", model.name),
                detail: format!("fraud probability {p:.3}"),
                weight,
                spans: Vec::new(),
            },
            dense,
        ))
    }

    /// Names the features that pushed the model most, for a moderator.
    fn explain_model(&self, listing: &Listing, a: &Analysis, dense: &Features) -> String {
        let Some(model) = &self.model else {
            return String::new();
        };
        let top = model.top_contributions(&[&a.text_features, dense], 5);
        let wanted: Vec<u32> = top
            .iter()
            .map(|&(i, _)| i)
            .filter(|&i| dense_name(i).is_none())
            .collect();
        let mut names = NamesOf::new(&wanted);
        if !wanted.is_empty() {
            // The analysis's hits and facts: only the normalized text is
            // not kept (the whole rule stage again was 4% of a resident
            // replay's history thread).
            let (title, body) = (normalize(&listing.title), normalize(&listing.body));
            text_features(&title, &body, &a.hits, &a.facts, &self.rules, &mut names);
        }
        top.iter()
            .map(|(i, c)| {
                let name = dense_name(*i).map(str::to_owned).or_else(|| {
                    names
                        .names
                        .iter()
                        .find(|(b, _)| b == i)
                        .map(|(_, n)| n.clone())
                });
                format!("{} {c:+.2}", name.unwrap_or_else(|| format!("#{i}")))
            })
            .collect::<Vec<_>>()
            .join(", ")
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
        let model = self.model_reason(listing, a, snap);
        let model_at = model.as_ref().map(|_| reasons.len());
        if let Some((r, _)) = &model {
            reasons.push(r.clone());
        }

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
        // Explaining the model costs a second pass over the text: only for
        // listings a moderator will see.
        if let (Some(i), Some((_, dense)), true) = (model_at, &model, action.is_flag()) {
            let top = self.explain_model(listing, a, dense);
            if !top.is_empty() {
                reasons[i].detail.push_str("; top features: ");
                reasons[i].detail.push_str(&top);
            }
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
