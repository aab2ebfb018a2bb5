//! What a load run sends: the calls of each workload, drawn from a seeded generator, as
//! JSON-RPC request text.

use serde_json::json;

use super::{ALERTS, CATEGORIES, CHANNEL_TYPES, Mix, Rng, Users, WORKFLOWS, Workload, user_id};

/// One call to make: a method and its params as JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: &'static str,
    pub params: Option<String>,
    /// For a REST call: the path to GET instead of the JSON-RPC request.
    pub rest_path: Option<String>,
}

impl Call {
    /// The JSON-RPC request body.
    pub fn http_body(&self) -> String {
        let params = self.params.as_deref().unwrap_or("");
        let mut body = String::with_capacity(64 + params.len());
        body.push_str(r#"{"jsonrpc":"2.0","id":1,"method":""#);
        body.push_str(self.method);
        body.push('"');
        if let Some(p) = &self.params {
            body.push_str(r#","params":"#);
            body.push_str(p);
        }
        body.push('}');
        body
    }
}

/// The calls of a workload, drawn from a seeded generator.
pub struct Requests {
    pub workload: Workload,
    pub batch: u32,
    pub mix: Mix,
    pub users: Users,
    pub rng: Rng,
    /// The instant of `get-as-of` calls: the first call's time.
    pub as_of: Option<String>,
}

impl Requests {
    pub fn next_call(&mut self) -> Call {
        let workload = match self.workload {
            Workload::Mixed => self.mix.pick(&mut self.rng),
            w => w,
        };
        match workload {
            Workload::Ping | Workload::Mixed => Call {
                method: "daemon.ping",
                params: None,
                rest_path: None,
            },
            Workload::Get => {
                let user = user_id(self.users.draw(&mut self.rng));
                Call {
                    method: "users.getPreferences",
                    // Text, not a `Value`, as in `evaluate_call`.
                    params: Some(format!(r#"{{"user_id":"{user}"}}"#)),
                    rest_path: None,
                }
            }
            Workload::RestGet => {
                let user = user_id(self.users.draw(&mut self.rng));
                Call {
                    method: "GET /v1/users/{id}/preferences/default",
                    params: None,
                    rest_path: Some(format!("/v1/users/{user}/preferences/default")),
                }
            }
            Workload::Set => self.set_call(),
            Workload::GetAsOf => {
                let user = user_id(self.users.draw(&mut self.rng));
                let as_of = self
                    .as_of
                    .get_or_insert_with(|| jiff::Timestamp::now().to_string());
                Call {
                    method: "users.getPreferences",
                    params: Some(format!(r#"{{"user_id":"{user}","as_of":"{as_of}"}}"#)),
                    rest_path: None,
                }
            }
            Workload::Evaluate => self.evaluate_call(1),
            Workload::EvaluateBatch => self.evaluate_call(self.batch),
        }
    }

    /// A small set with varied values: random choices plus a channel keyed by a random
    /// nonce, so that no write is byte-identical to what is stored and SQLite really writes.
    fn set_call(&mut self) -> Call {
        let rng = &mut self.rng;
        let user = user_id(self.users.draw(rng));
        let (workflow, category) = *rng.pick(&WORKFLOWS);
        let mut channel_types = serde_json::Map::new();
        channel_types.insert("email".into(), json!(rng.chance(80)));
        channel_types.insert((*rng.pick(&CHANNEL_TYPES)).into(), json!(rng.bool()));
        let params = json!({
            "user_id": user,
            "preferences": {
                "channel_types": channel_types,
                "workflows": { workflow: { "channel_types": { *rng.pick(&CHANNEL_TYPES): rng.bool() } } },
                "categories": { category: rng.chance(70) },
                "channels": { format!("bench-{:016x}", rng.next_u64()): rng.bool() },
            }
        });
        Call {
            method: "users.setPreferences",
            params: Some(params.to_string()),
            rest_path: None,
        }
    }

    /// `recipients` users (consecutive from a random one) × all six channel types, for a
    /// workflow given inline (no catalog lookup) with its category. The params are written
    /// as text rather than built as a `Value`: the client shares the machine with the
    /// daemon, and every microsecond it spends is one the daemon does not get.
    fn evaluate_call(&mut self, recipients: u32) -> Call {
        use std::fmt::Write;
        let rng = &mut self.rng;
        let (workflow, category) = *rng.pick(&WORKFLOWS);
        debug_assert!(CATEGORIES.contains(&category));
        let first = self.users.draw(rng);
        let mut params = String::with_capacity(200 + 16 * recipients as usize);
        // Workflow keys, categories, channel types and user ids need no JSON escaping.
        let _ = write!(
            params,
            r#"{{"workflow":{{"key":"{workflow}","categories":["{category}"]}},"channels":["#
        );
        for (i, t) in CHANNEL_TYPES.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(params, r#"{comma}{{"type":"{t}"}}"#);
        }
        params.push_str(r#"],"recipients":["#);
        for k in 0..u64::from(recipients) {
            let comma = if k == 0 { "" } else { "," };
            let _ = write!(
                params,
                r#"{comma}"{}""#,
                user_id((first + k) % self.users.count)
            );
        }
        let _ = write!(
            params,
            r#"],"data":{{"alert_id":"alert-{}"}}}}"#,
            rng.below(ALERTS)
        );
        Call {
            method: "preferences.evaluate",
            params: Some(params),
            rest_path: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The thousand users of the tests, drawn with `skew`.
    fn users(skew: f64) -> Users {
        Users { count: 1000, skew }
    }

    fn requests(workload: Workload) -> Requests {
        Requests {
            workload,
            batch: 5,
            mix: "reads=70,evaluates=25,writes=5"
                .parse()
                .expect("a valid mix"),
            users: users(0.0),
            rng: Rng::new(9),
            as_of: None,
        }
    }

    /// The share of `draws` calls that went to the `top` most drawn users.
    fn share_of_top(users: Users, draws: usize, top: usize) -> (f64, Vec<u64>) {
        let mut rng = Rng::new(3);
        let mut counts = vec![0u64; users.count as usize];
        for _ in 0..draws {
            let i = users.draw(&mut rng);
            assert!(i < users.count, "{i} is out of range");
            counts[i as usize] += 1;
        }
        let mut order: Vec<u64> = (0..users.count).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(counts[i as usize]));
        order.truncate(top);
        let hot = order.iter().map(|&i| counts[i as usize]).sum::<u64>();
        (hot as f64 / draws as f64, order)
    }

    #[test]
    fn skewed_users_follow_the_power_law_and_are_scattered() {
        let draws = 200_000;
        // Uniform: the top 10 of 1000 get about 1%.
        let (uniform, _) = share_of_top(users(0.0), draws, 10);
        assert!(uniform < 0.015, "{uniform}");
        // Skew 1: ranks 1..=10 get ln(11)/ln(1001) = 0.347 of the draws, rank 1 alone
        // ln(2)/ln(1001) = 0.100.
        let zipf = users(1.0);
        let (top10, hot) = share_of_top(zipf, draws, 10);
        assert!((0.33..0.365).contains(&top10), "{top10}");
        let (top1, _) = share_of_top(zipf, draws, 1);
        assert!((0.09..0.11).contains(&top1), "{top1}");
        // The hot users are spread over the id space, not the first ten ids.
        assert!(hot.iter().filter(|&&i| i >= 10).count() >= 8, "{hot:?}");
        // Skew 2 concentrates more: ranks 1..=10 get about (1 - 1/11)/(1 - 1/1001) = 0.91.
        let (steep, _) = share_of_top(users(2.0), draws, 10);
        assert!((0.89..0.93).contains(&steep), "{steep}");
    }

    #[test]
    fn calls_are_valid_json_rpc() {
        for w in [
            Workload::Ping,
            Workload::Get,
            Workload::Set,
            Workload::GetAsOf,
            Workload::Evaluate,
            Workload::EvaluateBatch,
            Workload::Mixed,
        ] {
            let mut r = requests(w);
            for _ in 0..50 {
                let call = r.next_call();
                let body: Value =
                    serde_json::from_str(&call.http_body()).expect("the body is JSON");
                assert_eq!(body["jsonrpc"], "2.0");
                assert_eq!(body["method"], call.method);
                if let Some(params) = &body.get("params") {
                    assert!(params.is_object(), "{w:?}: {params}");
                }
            }
        }
    }

    #[test]
    fn calls_are_deterministic_and_in_range() {
        let a: Vec<Call> = {
            let mut r = requests(Workload::Mixed);
            (0..200).map(|_| r.next_call()).collect()
        };
        let b: Vec<Call> = {
            let mut r = requests(Workload::Mixed);
            (0..200).map(|_| r.next_call()).collect()
        };
        assert_eq!(a, b);
        let methods: std::collections::BTreeSet<&str> = a.iter().map(|c| c.method).collect();
        assert_eq!(
            methods.into_iter().collect::<Vec<_>>(),
            [
                "preferences.evaluate",
                "users.getPreferences",
                "users.setPreferences"
            ]
        );
        let mut r = requests(Workload::EvaluateBatch);
        let call = r.next_call();
        let params: Value =
            serde_json::from_str(call.params.as_deref().expect("params")).expect("JSON");
        assert_eq!(params["recipients"].as_array().map(Vec::len), Some(5));
        assert_eq!(params["channels"].as_array().map(Vec::len), Some(6));
        for (channel, t) in params["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(CHANNEL_TYPES)
        {
            assert_eq!(channel, &json!({ "type": t }));
        }
        let workflow = &params["workflow"];
        assert!(
            WORKFLOWS.iter().any(|(key, category)| *workflow
                == json!({ "key": key, "categories": [category] })),
            "{workflow}"
        );
        let alert = params["data"]["alert_id"].as_str().expect("data.alert_id");
        assert!(alert.starts_with("alert-"), "{alert}");
        for id in params["recipients"].as_array().into_iter().flatten() {
            let n: u64 = id
                .as_str()
                .and_then(|s| s.strip_prefix("user-"))
                .and_then(|s| s.parse().ok())
                .expect("a seeded user id");
            assert!(n < 1000);
        }
    }

    #[test]
    fn sets_vary_between_calls() {
        let mut r = requests(Workload::Set);
        let a = r.next_call();
        let b = r.next_call();
        assert_ne!(a.params, b.params);
        let params: Value =
            serde_json::from_str(a.params.as_deref().expect("params")).expect("JSON");
        crate::model::PreferenceSet::parse(
            &params["preferences"],
            crate::model::SetKind::Recipient,
            "preferences",
        )
        .expect("the set workload writes valid sets");
    }
}
