//! The fuzz targets of prefsd, shared by the cargo-fuzz crate (`tests/fuzz`, libFuzzer on
//! nightly) and the property tests of `cargo test` (`tests/it/fuzz.rs`, proptest on
//! stable), so both drive exactly the same code with exactly the same checks.
//!
//! - [`preference_set`]: bytes → JSON → `PreferenceSet::parse` and
//!   `PreferenceSetRequest::parse` / `parse_as` / `apply`, for both set kinds;
//! - [`evaluate`]: bytes → a hierarchy of sets, a workflow, a channel and a context →
//!   `eval::decide`, lazily and against the materialised effective set;
//! - [`Requests`]: bytes → one JSON-RPC request into the method table of a daemon on a temp
//!   database, in process (`RpcModule::raw_json_request`).
//!
//! Each target reads its bytes two ways, chosen by the first byte: as text (JSON, a
//! request), or as a choice sequence for a small grammar of the model's vocabulary, so that
//! mutations reach deep into validation and evaluation instead of dying in the JSON parser.
//! A failed check panics: that is a crash to libFuzzer and a failing case to proptest.

#![allow(dead_code)]

use std::cell::OnceCell;
use std::sync::Arc;

use prefsd::eval::{Context, Entity, Properties, decide};
use prefsd::model::compact::{CompactSet, Interner};
use prefsd::model::{
    Channel, ChannelType, PreferenceSet, PreferenceSetRequest, SetKind, Strategy, Workflow,
};
use prefsd::resolve::{LayerId, SetRef, Sources, Stack};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// A choice sequence

/// Reads choices from the fuzzer's bytes; past the end every choice is 0 (the simplest).
pub struct Gen<'a> {
    data: &'a [u8],
    pos: usize,
}

const SECTIONS: &[&str] = &[
    "workflows",
    "categories",
    "channel_types",
    "channels",
    "commercial_subscribed",
];
const SETTING_KEYS: &[&str] = &["channel_types", "channels", "conditions", "__strategy__"];
const CHANNEL_TYPES: &[&str] = &["email", "sms", "push", "chat", "in_app_feed", "http", "fax"];
const OPERATORS: &[&str] = &[
    "equal_to",
    "not_equal_to",
    "greater_than",
    "less_than",
    "greater_than_or_equal_to",
    "less_than_or_equal_to",
    "contains",
    "not_contains",
    "contains_all",
    "not_contains_all",
    "empty",
    "not_empty",
    "exists",
    "not_exists",
    "is_timestamp",
    "is_not_timestamp",
    "is_timestamp_before",
    "is_timestamp_on_or_after",
    "is_timestamp_before_date",
    "is_timestamp_on_or_after_date",
    "is_timestamp_between",
    "is_between",
    "is_audience_member",
    "is_not_audience_member",
    "is_cool",
];
const PATHS: &[&str] = &[
    "data.x",
    "data.n",
    "data.list",
    "data.list.0",
    "data.x.y.z",
    "recipient.a",
    "recipient.id",
    "recipient.collection",
    "recipient.t",
    "actor.id",
    "actor.n",
    "tenant.id",
    "tenant.name",
    "tenant.properties.plan",
    "vars.v",
    "vars.list.0",
    "workflow.key",
    "workflow.categories",
    "data.",
    "nope.x",
    "recipient",
    "",
];
const WORDS: &[&str] = &[
    "u1",
    "u2",
    "acme",
    "default",
    "w1",
    "new-comment",
    "marketing",
    "c1",
    "ch1",
    "aef6e715-df82-4ab6-b61e-b743e249f7b6",
    "beta",
    "projects",
    "a",
    "x",
    "n",
    "list",
    "plan",
    "pro",
    "2026-11-29T12:00:00Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-02-30T00:00:00Z",
    "3 days ago",
    "2 weeks from now",
    "99999999999999 weeks ago",
    "-3 days ago",
    "1700000000",
    "1e400",
    "NaN",
    "[1,2]",
    "merge",
    "replace",
    "__persistence_strategy__",
    "__strategy__",
    "__typename",
    "id",
    "",
    " ",
    "é",
    "\u{0}",
    "null",
];
const PARAMS: &[&str] = &[
    "user_id",
    "collection",
    "object_id",
    "tenant_id",
    "preferences",
    "preference_set",
    "properties",
    "raw",
    "tenant",
    "workflow",
    "recipients",
    "channels",
    "data",
    "actor",
    "now",
    "audience_key",
    "members",
    "limit",
    "after",
    "status",
    "id",
    "user_ids",
    "idempotency_key",
    "settings",
    "name",
    "resolve_full_preference_settings",
    "bogus",
];

impl<'a> Gen<'a> {
    pub fn new(data: &'a [u8]) -> Gen<'a> {
        Gen { data, pos: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A choice in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        usize::from(self.byte()) % n
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'v>(&mut self, options: &[&'v str]) -> &'v str {
        options[self.below(options.len())]
    }

    fn word(&mut self) -> String {
        if self.chance(90) {
            self.pick(WORDS).to_string()
        } else {
            // A few raw bytes as text.
            let n = self.below(12);
            (0..n).map(|_| char::from(self.byte())).collect()
        }
    }

    fn number(&mut self) -> Value {
        match self.below(6) {
            0 => json!(i64::from(self.byte()) - 128),
            1 => json!(u64::MAX - u64::from(self.byte())),
            2 => json!(f64::from(self.byte()) / 7.0),
            3 => json!(1e308),
            4 => json!(1_700_000_000 + i64::from(self.byte()) * 86_400),
            _ => json!(0),
        }
    }

    /// Any JSON, a few levels deep, with the vocabulary's strings and keys.
    pub fn json(&mut self, depth: usize) -> Value {
        let kinds = if depth == 0 { 4 } else { 6 };
        match self.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(50)),
            2 => self.number(),
            3 => Value::String(self.word()),
            4 => {
                let n = self.below(4);
                Value::Array((0..n).map(|_| self.json(depth - 1)).collect())
            }
            _ => {
                let n = self.below(4);
                Value::Object(
                    (0..n)
                        .map(|_| (self.word(), self.json(depth - 1)))
                        .collect(),
                )
            }
        }
    }

    fn condition(&mut self) -> Value {
        let mut c = Map::new();
        if self.chance(95) {
            c.insert("variable".into(), json!(self.pick(PATHS)));
        }
        if self.chance(95) {
            c.insert("operator".into(), json!(self.pick(OPERATORS)));
        }
        if self.chance(80) {
            let argument = match self.below(4) {
                0 => json!(self.pick(PATHS)),
                1 => json!([self.word(), self.word()]),
                _ => self.json(1),
            };
            c.insert("argument".into(), argument);
        }
        if self.chance(5) {
            c.insert(self.word(), self.json(1));
        }
        Value::Object(c)
    }

    fn conditions(&mut self) -> Value {
        let n = self.below(3);
        Value::Array((0..n).map(|_| self.condition()).collect())
    }

    /// A channel type or channel setting: a boolean, or `{ conditions }`.
    fn toggle(&mut self) -> Value {
        match self.below(8) {
            0..=4 => Value::Bool(self.chance(50)),
            5 | 6 => json!({ "conditions": self.conditions() }),
            _ => self.json(1),
        }
    }

    fn toggles(&mut self, keys: &[&str]) -> Value {
        let n = self.below(4);
        let mut m = Map::new();
        for _ in 0..n {
            let key = if self.chance(90) {
                self.pick(keys).to_string()
            } else {
                self.word()
            };
            m.insert(key, self.toggle());
        }
        if self.chance(10) {
            m.insert("__strategy__".into(), json!("replace"));
        }
        Value::Object(m)
    }

    /// A workflow or category setting.
    fn setting(&mut self) -> Value {
        match self.below(6) {
            0 | 1 => Value::Bool(self.chance(50)),
            2 => self.json(2),
            _ => {
                let mut m = Map::new();
                for _ in 0..self.below(4) {
                    match self.pick(SETTING_KEYS) {
                        "channel_types" => {
                            m.insert("channel_types".into(), self.toggles(CHANNEL_TYPES));
                        }
                        "channels" => {
                            let ids = ["ch1", "ch2", "aef6e715-df82-4ab6-b61e-b743e249f7b6"];
                            m.insert("channels".into(), self.toggles(&ids));
                        }
                        "conditions" => {
                            m.insert("conditions".into(), self.conditions());
                        }
                        _ => {
                            m.insert("__strategy__".into(), json!("replace"));
                        }
                    }
                }
                Value::Object(m)
            }
        }
    }

    /// A preference set as JSON, mostly valid.
    pub fn set(&mut self) -> Value {
        let mut m = Map::new();
        for _ in 0..self.below(5) {
            let section = if self.chance(95) {
                self.pick(SECTIONS).to_string()
            } else {
                self.word()
            };
            let value = match section.as_str() {
                "workflows" | "categories" => {
                    let keys = ["w1", "new-comment", "marketing", "c1", "digest"];
                    let mut s = Map::new();
                    for _ in 0..self.below(4) {
                        let key = self.pick(&keys).to_string();
                        s.insert(key, self.setting());
                    }
                    Value::Object(s)
                }
                "channel_types" => self.toggles(CHANNEL_TYPES),
                "channels" => self.toggles(&["ch1", "ch2"]),
                "commercial_subscribed" => self.toggle(),
                _ => self.json(2),
            };
            m.insert(section, value);
        }
        if self.chance(15) {
            let strategy = if self.chance(50) { "merge" } else { "replace" };
            m.insert("__persistence_strategy__".into(), json!(strategy));
        }
        if self.chance(5) {
            m.insert("id".into(), json!("default"));
        }
        Value::Object(m)
    }

    fn properties(&mut self) -> Value {
        let mut m = Map::new();
        for _ in 0..self.below(5) {
            let key = self
                .pick(&["a", "x", "n", "t", "list", "plan", "v", "id"])
                .to_string();
            m.insert(key, self.json(2));
        }
        Value::Object(m)
    }

    /// An id: mostly a valid one of a few, so that calls meet earlier writes.
    fn id(&mut self) -> String {
        if self.chance(85) {
            self.pick(&["u1", "u2", "u3", "acme", "p1", "default"])
                .to_string()
        } else {
            self.word()
        }
    }

    /// The params of a call of `method`: mostly its own params with plausible values,
    /// sometimes any of them, sometimes not an object at all.
    fn params(&mut self, method: &str) -> Value {
        if self.chance(3) {
            return self.json(3);
        }
        let own = params_of(method);
        let names: Vec<&str> = if self.chance(85) {
            own.iter().copied().filter(|_| self.chance(80)).collect()
        } else {
            (0..self.below(6)).map(|_| self.pick(PARAMS)).collect()
        };
        let mut m = Map::new();
        for name in names {
            let value = self.param(method, name);
            m.insert(name.to_string(), value);
        }
        Value::Object(m)
    }

    fn param(&mut self, method: &str, name: &str) -> Value {
        if self.chance(5) {
            return self.json(2);
        }
        let inline_sets = method.ends_with("identify") || method == "objects.set";
        match name {
            "preferences" if inline_sets => json!({ self.id(): self.set() }),
            "preferences" => self.set(),
            "settings" => json!({ "preference_set": self.set() }),
            "properties" | "data" => self.properties(),
            "user_ids" => Value::Array((0..self.below(4)).map(|_| json!(self.id())).collect()),
            "recipients" => Value::Array(
                (0..self.below(4))
                    .map(|_| match self.below(3) {
                        0 => json!({ "id": self.id(), "properties": self.properties(),
                                     "preferences": { self.id(): self.set() } }),
                        1 => json!({ "id": self.id(), "collection": "projects" }),
                        _ => json!(self.id()),
                    })
                    .collect(),
            ),
            "channels" => Value::Array(
                (0..self.below(3))
                    .map(|_| json!({ "type": self.pick(CHANNEL_TYPES) }))
                    .collect(),
            ),
            "members" => json!([{ "user_id": self.id() }]),
            "workflow" if self.chance(30) => json!({ "key": self.id(),
                "categories": [self.word()], "commercial": self.chance(50) }),
            "tenant" | "actor" if self.chance(30) => json!({ "id": self.id(),
                "properties": self.properties() }),
            "limit" => json!(self.below(5)),
            "raw" | "resolve_full_preference_settings" => json!(self.chance(50)),
            "now" | "status" | "after" => json!(self.word()),
            "collection" => json!("projects"),
            _ => json!(self.id()),
        }
    }
}

/// The params each method takes (rpc.md).
fn params_of(method: &str) -> &'static [&'static str] {
    let (namespace, name) = method.split_once('.').unwrap_or(("", method));
    match (namespace, name) {
        ("users", "identify") => &["user_id", "properties", "preferences"],
        ("objects", "set") => &["collection", "object_id", "properties", "preferences"],
        ("users", "get" | "delete" | "listPreferences") => &["user_id"],
        ("objects", "get" | "delete" | "listPreferences") => &["collection", "object_id"],
        ("users", "getPreferences") => &["user_id", "preference_set", "tenant", "raw"],
        ("objects", "getPreferences") => {
            &["collection", "object_id", "preference_set", "tenant", "raw"]
        }
        ("users", "setPreferences") => &["user_id", "preference_set", "preferences"],
        ("objects", "setPreferences") => {
            &["collection", "object_id", "preference_set", "preferences"]
        }
        ("users", "unsetPreferences") => &["user_id", "preference_set"],
        ("objects", "unsetPreferences") => &["collection", "object_id", "preference_set"],
        ("users", "bulkSetPreferences") => &[
            "user_ids",
            "preference_set",
            "preferences",
            "idempotency_key",
        ],
        ("tenants", "set") => &["tenant_id", "name", "properties", "settings"],
        ("tenants", "get") => &["tenant_id", "resolve_full_preference_settings"],
        ("tenants", "delete") => &["tenant_id"],
        ("audiences", "listMembers") => &["audience_key", "limit", "after"],
        ("audiences", _) => &["audience_key", "members"],
        ("bulkOperations", "list") => &["status", "limit", "after"],
        ("bulkOperations", _) => &["id"],
        ("preferences", "evaluate") => &[
            "workflow",
            "channels",
            "recipients",
            "tenant",
            "data",
            "actor",
            "now",
        ],
        _ => &[],
    }
}

/// The first byte chooses how the rest is read: as text (`< 128`) or as choices.
fn split_mode(data: &[u8]) -> (bool, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first < 128, rest),
        None => (true, data),
    }
}

// ---------------------------------------------------------------------------------------
// Target: the preference-set parser and validator

/// Bytes → JSON → every parse and write path of the model. Checks: no panic; a parsed set
/// parses back to itself (normalisation is idempotent); the result of a write is a valid
/// set; every error names at least one field.
pub fn preference_set(data: &[u8]) {
    let (text, rest) = split_mode(data);
    let (stored, body) = if text {
        // `stored` and `body` separated by a newline, or the same document twice.
        let (a, b) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, rest),
        };
        let (Ok(a), Ok(b)) = (
            serde_json::from_slice::<Value>(a),
            serde_json::from_slice::<Value>(b),
        ) else {
            return;
        };
        (a, b)
    } else {
        let mut g = Gen::new(rest);
        (g.set(), g.set())
    };
    for kind in [SetKind::Recipient, SetKind::Default] {
        let stored = match PreferenceSet::parse(&stored, kind, "stored") {
            Ok(set) => {
                check_normalised(&set, kind);
                let _ = set.to_response("default");
                Some(set)
            }
            Err(e) => {
                assert!(!e.errors.is_empty(), "an error without fields");
                None
            }
        };
        for default in [Strategy::Replace, Strategy::Merge] {
            let parsed = [
                PreferenceSetRequest::parse(&body, default, "preferences"),
                PreferenceSetRequest::parse_as(&body, default, kind, "preferences"),
            ];
            for request in parsed {
                let Ok(request) = request else { continue };
                for base in [None, stored.as_ref()] {
                    if let Ok(set) = request.apply(base, kind, "preferences") {
                        check_normalised(&set, kind);
                    }
                }
            }
        }
    }
}

fn check_normalised(set: &PreferenceSet, kind: SetKind) {
    let again = PreferenceSet::parse(&set.to_value(), kind, "again")
        .unwrap_or_else(|e| panic!("a valid set does not parse back: {e}: {}", set.to_value()));
    assert_eq!(&again, set, "normalisation is not idempotent");
}

// ---------------------------------------------------------------------------------------
// Target: evaluation

/// Bytes → a recipient's hierarchy (environment, tenant default, recipient sets), a
/// workflow, channels and a context → `decide`. Checks: no panic; the same answer twice;
/// the lazy walk and the materialised effective set agree; override always sends.
pub fn evaluate(data: &[u8]) {
    let mut g = Gen::new(data);
    let parse = |v: Value, kind| PreferenceSet::parse(&v, kind, "p").ok();
    let environment = parse(g.set(), SetKind::Default).unwrap_or_default();
    let tenant_id = g.pick(&["acme", "t2", "default"]).to_string();
    let has_tenant = g.chance(60);
    let tenant_default = if g.chance(60) {
        parse(g.set(), SetKind::Default)
    } else {
        None
    };
    let recipient_default = parse(g.set(), SetKind::Recipient);
    let recipient_tenant = if g.chance(50) {
        parse(g.set(), SetKind::Recipient)
    } else {
        None
    };
    let n = 1 + g.below(3);
    let workflow = Workflow {
        key: g
            .pick(&["w1", "new-comment", "marketing", "digest", ""])
            .to_string(),
        categories: (0..g.below(3))
            .map(|_| g.pick(&["marketing", "c1", "w1"]).to_string())
            .collect(),
        commercial: g.chance(30),
        override_preferences: g.chance(10),
    };
    let channels: Vec<Channel> = (0..n)
        .map(|_| Channel {
            channel_type: ChannelType::ALL[g.below(ChannelType::ALL.len())],
            id: g.chance(40).then(|| {
                g.pick(&["ch1", "ch2", "aef6e715-df82-4ab6-b61e-b743e249f7b6"])
                    .to_string()
            }),
        })
        .collect();
    let recipient_props = g.properties();
    let actor_props = g.properties();
    let has_actor = g.chance(50);
    let data_value = g.properties();
    let tenant_value = if has_tenant {
        json!({ "id": tenant_id, "name": g.word(), "properties": g.properties() })
    } else {
        Value::Null
    };
    let vars = g.properties();
    let audiences: Vec<Arc<str>> = (0..g.below(3)).map(|_| g.word().into()).collect();
    let now = match g.below(4) {
        0 => jiff::Timestamp::MIN,
        1 => jiff::Timestamp::MAX,
        _ => jiff::Timestamp::from_second(1_600_000_000 + i64::from(g.byte()) * 3_600_000)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    };

    let workflow_value = workflow.to_value();
    // The recipient as the daemon evaluates it: properties as text, parsed when read, and
    // its sets compact (`store::cache`).
    let recipient_text = recipient_props.to_string();
    let recipient_parsed = OnceCell::new();
    let keys = Interner::default();
    let recipient_default = recipient_default.map(|s| CompactSet::new(&s, &keys));
    let recipient_tenant = recipient_tenant.map(|s| CompactSet::new(&s, &keys));
    let ctx = Context {
        recipient: Entity {
            id: "u1",
            collection: None,
            properties: Properties::Text(&recipient_text, &recipient_parsed),
            created_at: None,
            updated_at: None,
        },
        actor: has_actor.then_some(Entity {
            id: "a1",
            collection: None,
            properties: Properties::Parsed(&actor_props),
            created_at: None,
            updated_at: None,
        }),
        data: &data_value,
        tenant: &tenant_value,
        vars: &vars,
        workflow: &workflow_value,
        run: &Value::Null,
        audiences: &audiences,
        now,
        budget: prefsd::eval::Budget::unlimited(),
    };
    let stack = Stack::for_recipient(&Sources {
        environment: &environment,
        tenant: has_tenant.then_some((tenant_id.as_str(), tenant_default.as_ref())),
        recipient_default: recipient_default.as_ref().map(SetRef::from),
        recipient_tenant: recipient_tenant.as_ref().map(SetRef::from),
    });
    let effective = stack.effective();
    check_normalised(&effective, SetKind::Default);
    let flat = Stack::from_layers(&[(LayerId::Environment, SetRef::Json(&effective))]);
    let recipient_default = recipient_default.as_ref().map(SetRef::from);
    for channel in &channels {
        let d = decide(&workflow, channel, &stack, recipient_default, &ctx);
        let again = decide(&workflow, channel, &stack, recipient_default, &ctx);
        assert_eq!(d, again, "decide is not deterministic");
        if workflow.override_preferences {
            assert!(d.send, "override_preferences always sends: {d:?}");
        }
        let m = decide(&workflow, channel, &flat, recipient_default, &ctx);
        assert_eq!(
            (d.send, d.reason.code, &d.reason.path, &d.reason.condition),
            (m.send, m.reason.code, &m.reason.path, &m.reason.condition),
            "lazy and materialised evaluation disagree on {channel:?}; effective {}",
            effective.to_value()
        );
        let _ = serde_json::to_value(&d).expect("a decision serialises");
    }
}

// ---------------------------------------------------------------------------------------
// Target: the whole request path

/// The codes a request may be answered with; `-32603` (internal error) is never the answer
/// to bad input, so it is a finding.
const EXPECTED_CODES: &[i64] = &[
    -32700, -32600, -32601, -32602, -32001, -32002, -32003, -32004, -32005, -32006,
];

/// A daemon's method table on a temp database and config, driven in process.
pub struct Requests {
    pub runtime: tokio::runtime::Runtime,
    pub module: jsonrpsee::RpcModule<prefsd::api::Context>,
    methods: Vec<&'static str>,
    _dir: tempfile::TempDir,
}

impl Requests {
    pub fn new() -> Requests {
        let dir = tempfile::Builder::new()
            .prefix("prefsd-fuzz")
            .tempdir()
            .expect("a temp dir");
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(config_dir.join("tenants")).expect("the config dir");
        let files = [
            (
                "prefsd.toml",
                "durability = \"normal\"\n[vars]\nv = 1\n[limits]\nmax_request_bytes = 65536\nmax_preference_set_bytes = 4096\nmax_recipients = 20\nmax_bulk_users = 20\n",
            ),
            (
                "environment.json",
                r#"{ "channel_types": { "email": true, "sms": false }, "commercial_subscribed": true }"#,
            ),
            (
                "tenants/acme.json",
                r#"{ "categories": { "marketing": false } }"#,
            ),
            (
                "workflows.toml",
                "[[workflow]]\nkey = \"new-comment\"\ncategories = [\"c1\"]\nchannels = [{ type = \"email\" }]\n",
            ),
        ];
        for (path, text) in files {
            std::fs::write(config_dir.join(path), text).expect("a config file");
        }
        let overrides = prefsd::config::Overrides {
            socket: Some(dir.path().join("fuzz.sock")),
            database: Some(dir.path().join("fuzz.db")),
            ..Default::default()
        };
        let config = prefsd::config::ConfigHandle::load(config_dir, overrides, None)
            .unwrap_or_else(|e| panic!("the fuzz config is invalid: {e:?}"));
        let db = prefsd::store::Db::open(
            &dir.path().join("fuzz.db"),
            prefsd::config::Durability::Normal,
        )
        .expect("opening the database");
        let ctx = Arc::new(prefsd::api::Context::new(db, config));
        let mut module = prefsd::rpc::module(ctx).expect("the method table");
        // In process, no call passes `rpc::auth`, which names each call's actor for the
        // change log; the module's own extensions go with every call instead.
        module
            .extensions_mut()
            .insert(prefsd::model::change::Actor::Peer { uid: 0 });
        let methods = module.method_names().collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Requests {
            runtime,
            module,
            methods,
            _dir: dir,
        }
    }

    /// The names of the methods of the table.
    pub fn methods(&self) -> Vec<&'static str> {
        self.methods.clone()
    }

    /// The request text the bytes stand for.
    pub fn text(&self, data: &[u8]) -> Option<String> {
        request_text(&self.methods, data)
    }

    /// One request. Checks: no panic; a well-formed JSON-RPC response; no internal error.
    /// Returns the error code, 0 for a result, or `None` when there was no request.
    pub fn run(&self, data: &[u8]) -> Option<i64> {
        let text = self.text(data)?;
        let answer = self
            .runtime
            .block_on(self.module.raw_json_request(&text, 1));
        // Not a request object at all: jsonrpsee refuses it before any method runs.
        let (response, _subscription) = answer.ok()?;
        check_response(&text, response.get());
        let value: Value = serde_json::from_str(response.get()).ok()?;
        Some(value["error"]["code"].as_i64().unwrap_or(0))
    }
}

impl Default for Requests {
    fn default() -> Requests {
        Requests::new()
    }
}

/// The request text that `data` stands for: the bytes as text, or a request built from
/// them as choices (a method of `methods` and plausible params).
pub fn request_text(methods: &[&str], data: &[u8]) -> Option<String> {
    let (text, rest) = split_mode(data);
    if text {
        return std::str::from_utf8(rest).ok().map(str::to_string);
    }
    let mut g = Gen::new(rest);
    let method = if g.chance(95) && !methods.is_empty() {
        methods[g.below(methods.len())].to_string()
    } else {
        g.word()
    };
    let mut request = json!({ "jsonrpc": "2.0", "id": g.below(3), "method": method });
    if g.chance(90) {
        request["params"] = g.params(&method);
    }
    if g.chance(3) {
        request["jsonrpc"] = json!("1.0");
    }
    Some(request.to_string())
}

/// A response is JSON-RPC 2.0, with a result or an error of a documented code that has a
/// message and `data.type`.
pub fn check_response(request: &str, response: &str) {
    let value: Value = serde_json::from_str(response)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {response}\nfor {request}"));
    assert_eq!(value["jsonrpc"], "2.0", "{response}\nfor {request}");
    if let Some(error) = value.get("error") {
        let code = error["code"].as_i64().unwrap_or(0);
        assert!(
            EXPECTED_CODES.contains(&code),
            "unexpected error {response}\nfor {request}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{response}"
        );
        // Errors of the methods carry data.type; jsonrpsee's own (parse, unknown method)
        // get it from the HTTP layer, which raw_json_request does not pass through.
        if !matches!(code, -32700 | -32600 | -32601) {
            assert!(
                error["data"]["type"].is_string(),
                "{response}\nfor {request}"
            );
        }
    } else {
        assert!(value.get("result").is_some(), "{response}\nfor {request}");
    }
}
