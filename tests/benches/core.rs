//! Benchmarks of the pure core: one decision for one recipient on six channels against a
//! realistic three-layer hierarchy, the materialised effective set, and validation.
//!
//! The hierarchy is built deterministically: an environment default, the tenant default of
//! `acme` and the recipient's `acme` set, 30 workflows, 10 categories and 8 conditions spread
//! across them (mixed operators, some with dynamic arguments against trigger data and
//! recipient properties), with an admin lock on one category. The decided workflow reaches
//! four conditions on every channel and merges nodes from all three layers.
//!
//! `cargo bench --bench core` for numbers; `cargo bench --bench core -- --quick` in CI.
//! The target (issue): at most 2 µs per (recipient, channel), the merge included.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use prefsd::eval::{Context, Decision, Entity, Properties, decide};
use prefsd::model::compact::{CompactSet, Interner};
use prefsd::model::{Channel, ChannelType, PreferenceSet, SetKind, Workflow};
use prefsd::resolve::{SetRef, Sources, Stack};
use serde_json::{Map, Value, json};

const CATEGORIES: [&str; 10] = [
    "marketing",
    "product-updates",
    "security",
    "billing",
    "collaboration",
    "mentions",
    "digest",
    "reminders",
    "social",
    "system",
];

fn workflow_key(i: usize) -> String {
    format!("workflow-{i:02}")
}

/// The environment default: channel types, a lock on `security`, settings for every third
/// workflow, every category. Conditions: sms by country (1), collaboration against muted
/// alerts with a dynamic argument (2), mentions by sign-up time relative to now (3).
fn environment() -> Value {
    let mut workflows = Map::new();
    for i in (0..30).step_by(3) {
        workflows.insert(
            workflow_key(i),
            json!({ "channel_types": { "sms": false } }),
        );
    }
    let mut categories = Map::new();
    for (i, c) in CATEGORIES.iter().enumerate() {
        categories.insert(
            c.to_string(),
            json!({ "channel_types": { "email": true, "in_app_feed": i % 2 == 0 } }),
        );
    }
    categories.insert(
        "security".into(),
        json!({ "__strategy__": "replace", "channel_types": { "email": true, "sms": true } }),
    );
    categories.insert(
        "collaboration".into(),
        json!({ "conditions": [
            { "variable": "recipient.muted_alert_ids", "operator": "not_contains", "argument": "data.alert_id" }
        ] }),
    );
    categories.insert(
        "mentions".into(),
        json!({ "conditions": [
            { "variable": "recipient.created_at", "operator": "is_timestamp_before", "argument": "3 days ago" }
        ] }),
    );
    json!({
        "workflows": workflows,
        "categories": categories,
        "channel_types": {
            "email": true,
            "sms": { "conditions": [
                { "variable": "recipient.country_code", "operator": "equal_to", "argument": "US" }
            ] },
            "push": true,
            "chat": true,
            "in_app_feed": true,
            "http": false
        },
        "commercial_subscribed": true
    })
}

/// The tenant default of `acme`: ten workflows, three categories, one channel. Conditions:
/// a numeric range with a dynamic bound on workflow-07 (4), an amount against a recipient
/// threshold on digest (5), `exists` on workflow-12 (6).
fn tenant_default() -> Value {
    let mut workflows = Map::new();
    for i in (0..30).step_by(3).map(|i| i + 1) {
        workflows.insert(
            workflow_key(i),
            json!({ "channel_types": { "push": true, "chat": false } }),
        );
    }
    workflows.insert(
        workflow_key(7),
        json!({ "conditions": [
            { "variable": "data.priority", "operator": "is_between", "argument": [1, "recipient.max_priority"] }
        ] }),
    );
    workflows.insert(
        workflow_key(12),
        json!({ "conditions": [ { "variable": "data.severity", "operator": "exists" } ] }),
    );
    json!({
        "workflows": workflows,
        "categories": {
            "marketing": { "channel_types": { "sms": false, "push": false } },
            "digest": { "conditions": [
                { "variable": "data.amount", "operator": "greater_than", "argument": "recipient.threshold" }
            ] },
            "security": { "channel_types": { "email": false } }
        },
        "channels": { "slack-acme-alerts": true }
    })
}

/// The recipient's `acme` set: all 30 workflows, all 10 categories. Conditions: push on
/// mentions by tags (7), the chat channel by locale (8).
fn recipient_tenant() -> Value {
    let mut workflows = Map::new();
    for i in 0..30 {
        let setting = match i % 4 {
            0 => json!(true),
            1 => json!({ "channel_types": { "email": true, "sms": false } }),
            2 => json!({ "channel_types": { "push": false }, "channels": { "slack-c1": true } }),
            _ => json!({ "channel_types": { "in_app_feed": true } }),
        };
        workflows.insert(workflow_key(i), setting);
    }
    workflows.insert(
        workflow_key(7),
        json!({ "channel_types": { "email": true, "sms": false } }),
    );
    let mut categories = Map::new();
    for (i, c) in CATEGORIES.iter().enumerate() {
        let setting = if i % 3 == 0 {
            json!({ "channel_types": { "sms": false } })
        } else {
            json!({ "channel_types": { "email": true, "chat": true } })
        };
        categories.insert(c.to_string(), setting);
    }
    categories.insert("marketing".into(), json!(false));
    categories.insert(
        "mentions".into(),
        json!({ "channel_types": { "push": { "conditions": [
            { "variable": "recipient.tags", "operator": "contains_all", "argument": ["mobile"] }
        ] } } }),
    );
    // Tries to turn security email off; the environment's lock wins.
    categories.insert(
        "security".into(),
        json!({ "channel_types": { "email": false } }),
    );
    json!({
        "workflows": workflows,
        "categories": categories,
        "channel_types": { "sms": true, "push": true },
        "channels": {
            "slack-c1": { "conditions": [
                { "variable": "recipient.locale", "operator": "not_equal_to", "argument": "fr" }
            ] },
            "feed-main": true
        }
    })
}

struct Fixture {
    environment: PreferenceSet,
    tenant_default: PreferenceSet,
    /// The recipient's sets in the form the daemon evaluates them in (the read cache's).
    recipient_default: CompactSet,
    recipient_tenant: CompactSet,
    recipient_tenant_raw: Value,
    workflow: Workflow,
    workflow_value: Value,
    channels: Vec<Channel>,
    properties: Value,
    data: Value,
    tenant: Value,
    vars: Value,
    audiences: Vec<std::sync::Arc<str>>,
    now: Timestamp,
}

impl Fixture {
    fn new() -> Fixture {
        let parse = |v: &Value, kind| PreferenceSet::parse(v, kind, "bench").expect("a valid set");
        let workflow = Workflow {
            key: workflow_key(7),
            categories: vec!["collaboration".into(), "mentions".into(), "digest".into()],
            commercial: false,
            override_preferences: false,
        };
        let channels = ChannelType::ALL
            .into_iter()
            .map(|channel_type| Channel {
                channel_type,
                id: match channel_type {
                    ChannelType::Chat => Some("slack-c1".into()),
                    ChannelType::InAppFeed => Some("feed-main".into()),
                    _ => None,
                },
            })
            .collect();
        let recipient_tenant_raw = recipient_tenant();
        let keys = Interner::default();
        Fixture {
            environment: parse(&environment(), SetKind::Default),
            tenant_default: parse(&tenant_default(), SetKind::Default),
            recipient_default: CompactSet::new(
                &parse(
                    &json!({ "commercial_subscribed": true }),
                    SetKind::Recipient,
                ),
                &keys,
            ),
            recipient_tenant: CompactSet::new(
                &parse(&recipient_tenant_raw, SetKind::Recipient),
                &keys,
            ),
            recipient_tenant_raw,
            workflow_value: workflow.to_value(),
            workflow,
            channels,
            properties: json!({
                "country_code": "US",
                "muted_alert_ids": ["a-1", "a-2", "a-3"],
                "threshold": 100,
                "max_priority": 3,
                "created_at": "2025-01-01T00:00:00Z",
                "tags": ["mobile", "beta"],
                "locale": "en",
                "plan": "pro"
            }),
            data: json!({ "alert_id": "a-17", "amount": 250, "priority": 2, "severity": "high" }),
            tenant: json!({ "id": "acme", "name": "Acme", "properties": {}, "settings": {} }),
            vars: json!({}),
            audiences: vec!["beta-testers".into()],
            now: "2026-11-29T12:00:00Z".parse().expect("a timestamp"),
        }
    }

    fn sources(&self) -> Sources<'_> {
        Sources {
            environment: &self.environment,
            tenant: Some(("acme", Some(&self.tenant_default))),
            recipient_default: Some(SetRef::Compact(&self.recipient_default)),
            recipient_tenant: Some(SetRef::Compact(&self.recipient_tenant)),
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            recipient: Entity {
                id: "u1",
                collection: None,
                properties: Properties::Parsed(&self.properties),
                created_at: None,
                updated_at: None,
            },
            actor: None,
            data: &self.data,
            tenant: &self.tenant,
            vars: &self.vars,
            workflow: &self.workflow_value,
            run: &Value::Null,
            audiences: &self.audiences,
            now: self.now,
            budget: prefsd::eval::Budget::unlimited(),
        }
    }

    /// The bench body: build the recipient's stack and decide every channel.
    fn decide_all(&self, sources: &Sources<'_>, ctx: &Context<'_>) -> [Option<Decision>; 6] {
        let stack = Stack::for_recipient(sources);
        let mut out = [const { None }; 6];
        for (slot, channel) in out.iter_mut().zip(&self.channels) {
            *slot = Some(decide(
                &self.workflow,
                channel,
                &stack,
                Some(SetRef::Compact(&self.recipient_default)),
                ctx,
            ));
        }
        out
    }
}

fn core(c: &mut Criterion) {
    let fx = Fixture::new();
    let sources = fx.sources();
    let ctx = fx.context();

    // The fixture must reach evaluation: conditions hold where expected, and the two
    // channels that are off are off for the expected reasons.
    let sends: Vec<(bool, Option<String>)> = fx
        .decide_all(&sources, &ctx)
        .into_iter()
        .map(|d| {
            let d = d.expect("a decision per channel");
            (d.send, d.reason.path)
        })
        .collect();
    assert_eq!(
        sends,
        [
            (true, None),
            (
                false,
                Some("workflows.workflow-07.channel_types.sms".into())
            ),
            (true, None),
            (true, None),
            (true, None),
            (false, Some("channel_types.http".into())),
        ],
        "the fixture decides as designed"
    );

    c.bench_function("decide_6_channels", |b| {
        b.iter(|| fx.decide_all(black_box(&sources), black_box(&ctx)))
    });
    let stack = Stack::for_recipient(&sources);
    c.bench_function("effective_set", |b| {
        b.iter(|| black_box(&stack).effective())
    });
    c.bench_function("parse_set", |b| {
        b.iter(|| {
            PreferenceSet::parse(
                black_box(&fx.recipient_tenant_raw),
                SetKind::Recipient,
                "preferences",
            )
        })
    });
}

/// The list conditions at the caps (issue 22.2): one workflow whose two conditions each hold
/// a literal list of `MAX_LIST_ITEMS` items, against a recipient property list of 1000 and
/// of 8000 items (about what `limits.max_properties_bytes` allows for short items), the
/// comparisons that took 0.5 s per decision pairwise. One channel: the conditions are the
/// workflow's, decided once per recipient whatever the channels.
fn list_conditions(c: &mut Criterion) {
    use prefsd::eval::Budget;
    use prefsd::model::condition::MAX_LIST_ITEMS;
    let wanted: Vec<Value> = (0..MAX_LIST_ITEMS)
        .map(|i| json!(format!("t{i}")))
        .collect();
    let others: Vec<Value> = (0..MAX_LIST_ITEMS)
        .map(|i| json!(format!("o{i}")))
        .collect();
    let set = PreferenceSet::parse(
        &json!({ "workflows": { "w": { "conditions": [
            { "variable": "recipient.tags", "operator": "contains_all", "argument": wanted },
            { "variable": "recipient.tags", "operator": "not_contains", "argument": others },
        ] } } }),
        SetKind::Recipient,
        "preferences",
    )
    .expect("the conditions are within the caps");
    let environment = PreferenceSet::default();
    let workflow = Workflow {
        key: "w".into(),
        categories: Vec::new(),
        commercial: false,
        override_preferences: false,
    };
    let workflow_value = workflow.to_value();
    let channel = Channel {
        channel_type: ChannelType::Email,
        id: None,
    };
    for have in [1000, 8000] {
        // Every wanted item, at the end of the list, after ones that match nothing.
        let mut tags: Vec<Value> = (0..have - MAX_LIST_ITEMS)
            .map(|i| json!(format!("x{i}")))
            .collect();
        tags.extend((0..MAX_LIST_ITEMS).map(|i| json!(format!("t{i}"))));
        let properties = json!({ "tags": tags });
        let ctx = Context {
            recipient: Entity {
                id: "u1",
                collection: None,
                properties: Properties::Parsed(&properties),
                created_at: None,
                updated_at: None,
            },
            actor: None,
            data: &Value::Null,
            run: &Value::Null,
            tenant: &Value::Null,
            vars: &Value::Null,
            workflow: &workflow_value,
            audiences: &[],
            now: Timestamp::UNIX_EPOCH,
            budget: Budget::unlimited(),
        };
        let stack = Stack::for_recipient(&Sources {
            environment: &environment,
            tenant: None,
            recipient_default: Some(SetRef::Json(&set)),
            recipient_tenant: None,
        });
        let d = decide(&workflow, &channel, &stack, Some(SetRef::Json(&set)), &ctx);
        assert!(d.send, "the conditions hold: {d:?}");
        c.bench_function(&format!("decide_list_conditions_1000_vs_{have}"), |b| {
            b.iter(|| {
                decide(
                    &workflow,
                    &channel,
                    black_box(&stack),
                    Some(SetRef::Json(&set)),
                    &ctx,
                )
            })
        });
    }
}

criterion_group!(benches, core, list_conditions);
criterion_main!(benches);
