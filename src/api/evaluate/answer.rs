//! The answer of `preferences.evaluate`, written as JSON text directly (a 1000-recipient
//! answer through serde was a sixth of the call), and tested against serde's own output.

use serde::Serialize;

use crate::Error;
use crate::api::Json;
use crate::eval;
use crate::model::ChannelType;

/// The result of `preferences.evaluate` (rpc.md). It goes to the wire as [`Evaluation::render`]
/// writes it; the derived `Serialize` is the reference the writer is tested against.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub(super) results: Vec<RecipientResult>,
}

impl Evaluation {
    /// What comes before and after the results.
    pub(super) const OPEN: &'static [u8] = br#"{"results":["#;
    pub(super) const CLOSE: &'static [u8] = b"]}";

    /// The decisions made, by send and reason code, for the metrics.
    pub fn decision_counts(&self) -> crate::metrics::DecisionCounts {
        let mut counts = crate::metrics::DecisionCounts::default();
        for channel in self.results.iter().flat_map(|r| &r.channels) {
            counts.add(channel.send, channel.reason.code);
        }
        counts
    }

    /// About what a recipient takes in the answer, to size buffers.
    pub(super) fn bytes_per_recipient(channels: usize) -> usize {
        64 + channels * 112
    }

    /// The answer as JSON text, written directly: keys and names that need no escaping are
    /// copied, ids, paths and conditions go through serde_json. Serialising through serde
    /// escaped every key and grew its buffer by doubling; with jsonrpsee's own parse of the
    /// response, that was nine tenths of the async side of a 1000-recipient call.
    pub fn render(&self) -> Result<Json, Error> {
        let channels = self.results.first().map_or(0, |r| r.channels.len());
        let mut out =
            Vec::with_capacity(16 + self.results.len() * Self::bytes_per_recipient(channels));
        out.extend_from_slice(Self::OPEN);
        self.write_results(&mut out);
        out.extend_from_slice(Self::CLOSE);
        Self::to_json(out)
    }

    /// The results, comma-separated, without the brackets around them: [`Evaluation::render`]
    /// writes one evaluation, a chunked one joins the parts of several.
    pub(super) fn write_results(&self, out: &mut Vec<u8>) {
        use crate::resolve::write_str as string;
        fn optional(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => string(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        for (i, r) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"recipient":{"id":"#);
            string(out, &r.recipient.id);
            if let Some(collection) = &r.recipient.collection {
                out.extend_from_slice(br#","collection":"#);
                string(out, collection);
            }
            out.extend_from_slice(br#"},"channels":["#);
            for (j, c) in r.channels.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"type":""#);
                out.extend_from_slice(c.channel_type.as_str().as_bytes());
                out.extend_from_slice(br#"","id":"#);
                optional(out, c.id.as_deref());
                out.extend_from_slice(if c.send {
                    br#","send":true,"reason":{"code":""#
                } else {
                    br#","send":false,"reason":{"code":""#
                });
                out.extend_from_slice(c.reason.code.as_str().as_bytes());
                out.extend_from_slice(br#"","path":"#);
                optional(out, c.reason.path.as_deref());
                out.extend_from_slice(br#","layer":"#);
                optional(out, c.reason.layer.as_deref());
                out.extend_from_slice(br#","condition":"#);
                match &c.reason.condition {
                    Some(condition) => {
                        let _ = serde_json::to_writer(&mut *out, condition);
                    }
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(br#","considered":["#);
                for (k, layer) in c.reason.considered.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    string(out, layer);
                }
                out.extend_from_slice(b"]}}");
            }
            out.extend_from_slice(b"]}");
        }
    }

    /// Text made by the writers above: only str, static ASCII and serde_json's own output
    /// went in, so this cannot fail.
    pub(super) fn to_json(out: Vec<u8>) -> Result<Json, Error> {
        Json::from_utf8(out, "an evaluation")
    }
}

#[derive(Clone, Debug, Serialize)]
pub(super) struct RecipientResult {
    pub(super) recipient: RecipientId,
    pub(super) channels: Vec<ChannelResult>,
}

#[derive(Clone, Debug, Serialize)]
pub(super) struct RecipientId {
    pub(super) id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) collection: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(super) struct ChannelResult {
    #[serde(rename = "type")]
    pub(super) channel_type: ChannelType,
    pub(super) id: Option<String>,
    pub(super) send: bool,
    pub(super) reason: eval::Reason,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::eval::{Reason, ReasonCode};

    fn channel(
        channel_type: ChannelType,
        id: Option<&str>,
        send: bool,
        reason: Reason,
    ) -> ChannelResult {
        ChannelResult {
            channel_type,
            id: id.map(str::to_string),
            send,
            reason,
        }
    }

    #[test]
    fn the_written_answer_is_what_serde_writes() {
        let plain = Reason {
            code: ReasonCode::OptedIn,
            path: None,
            layer: None,
            condition: None,
            considered: ["environment".to_string(), "recipient:default (none)".into()].into(),
        };
        let odd = Reason {
            code: ReasonCode::ConditionFailed,
            path: Some("workflows.\"quoted\" \u{e9}\n".into()),
            layer: Some("recipient:default".into()),
            condition: Some(json!({ "variable": "recipient.x", "argument": [1, "a\u{1}"] })),
            considered: std::sync::Arc::default(),
        };
        let codes = [
            ReasonCode::OptedOut,
            ReasonCode::CommercialUnsubscribed,
            ReasonCode::OverridePreferences,
        ];
        let mut results = vec![
            RecipientResult {
                recipient: RecipientId {
                    id: "u\"1".into(),
                    collection: None,
                },
                channels: vec![
                    channel(ChannelType::Email, None, true, plain.clone()),
                    channel(ChannelType::InAppFeed, Some("feed-1"), false, odd),
                ],
            },
            RecipientResult {
                recipient: RecipientId {
                    id: "p1".into(),
                    collection: Some("projects".into()),
                },
                channels: Vec::new(),
            },
        ];
        results.push(RecipientResult {
            recipient: RecipientId {
                id: "u2".into(),
                collection: None,
            },
            channels: ChannelType::ALL
                .iter()
                .zip(codes.iter().cycle())
                .map(|(t, code)| {
                    let reason = Reason {
                        code: *code,
                        ..plain.clone()
                    };
                    channel(*t, None, false, reason)
                })
                .collect(),
        });
        for evaluation in [
            Evaluation { results },
            Evaluation {
                results: Vec::new(),
            },
        ] {
            let written = evaluation.render().expect("renders").0;
            let parsed: Value = serde_json::from_str(&written).expect("valid JSON");
            let reference = serde_json::to_value(&evaluation).expect("serialises");
            assert_eq!(parsed, reference, "{written}");
            // Key order too: the text is what serde would have written.
            assert_eq!(
                written,
                serde_json::to_string(&evaluation).expect("serialises")
            );
        }
    }
}
