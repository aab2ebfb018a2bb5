//! `workflows.toml`: the workflow catalog and its reading.

use std::collections::BTreeMap;

use toml::de::DeValue;

use super::ConfigError;
use super::reader::{Item, Lines, TomlReader, parse_toml};
use crate::model::{Channel, ChannelType, Workflow, check_id};

/// One `[[workflow]]` of `workflows.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogWorkflow {
    pub workflow: Workflow,
    /// The channels the workflow sends to; empty means all six types.
    pub channels: Vec<Channel>,
}

/// The most workflows `workflows.toml` may hold; more is refused with a message.
pub const MAX_WORKFLOWS: usize = 10_000;

/// `workflows.toml`: `[[workflow]]` tables and nothing else.
pub(super) fn parse_workflows(
    file: &str,
    source: &str,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, CatalogWorkflow> {
    let mut workflows = BTreeMap::new();
    let Some(table) = parse_toml(file, source, errors) else {
        return workflows;
    };
    let mut r = TomlReader {
        file,
        lines: Lines::of(source),
        errors,
    };
    // The line each key was first defined on, to name it in duplicate errors.
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    for (key, item) in table.iter() {
        if key.get_ref().as_ref() != "workflow" {
            let message = format!(
                "unknown key `{}`: the catalog holds only [[workflow]] tables",
                key.get_ref()
            );
            r.err(key.span(), message);
            continue;
        }
        let Some(array) = r.array("workflow", item) else {
            continue;
        };
        if array.len() > MAX_WORKFLOWS {
            r.err(
                item.span(),
                format!(
                    "the catalog holds {} workflows; at most {MAX_WORKFLOWS} are allowed",
                    array.len()
                ),
            );
            continue;
        }
        for element in array.iter() {
            let Some(workflow) = parse_workflow(&mut r, element) else {
                continue;
            };
            let line = r.line(element.span());
            let key = workflow.workflow.key.clone();
            if let Some(first) = first_line.get(&key) {
                r.err(
                    element.span(),
                    format!("duplicate workflow key `{key}` (first defined on line {first})"),
                );
                continue;
            }
            first_line.insert(key.clone(), line);
            workflows.insert(key, workflow);
        }
    }
    workflows
}

fn parse_workflow(r: &mut TomlReader<'_>, item: &Item<'_>) -> Option<CatalogWorkflow> {
    let DeValue::Table(table) = item.get_ref() else {
        r.wrong_type("workflow", item, "a table (write [[workflow]])");
        return None;
    };
    let mut ok = true;
    let mut key = None;
    let mut workflow = Workflow::default();
    let mut channels = Vec::new();
    for (k, item) in table.iter() {
        let parsed = match k.get_ref().as_ref() {
            "key" => r
                .string("key", item)
                .and_then(|s| match check_id("key", &s) {
                    Ok(()) => {
                        key = Some(s);
                        Some(())
                    }
                    Err(e) => {
                        r.err(item.span(), format!("`key` {}", e.message));
                        None
                    }
                }),
            "categories" => r.string_array("categories", item).map(|categories| {
                workflow.categories = categories;
            }),
            "commercial" => r.bool("commercial", item).map(|b| workflow.commercial = b),
            "override_preferences" => r
                .bool("override_preferences", item)
                .map(|b| workflow.override_preferences = b),
            "channels" => parse_channels(r, item).map(|c| channels = c),
            _ => {
                r.unknown_key(k, "[[workflow]]");
                None
            }
        };
        ok &= parsed.is_some();
    }
    let Some(key) = key else {
        if ok {
            r.err(item.span(), "a [[workflow]] needs a `key`");
        }
        return None;
    };
    workflow.key = key;
    ok.then_some(CatalogWorkflow { workflow, channels })
}

/// `channels = [{ type = "email" }, { type = "chat", id = "..." }]`.
fn parse_channels(r: &mut TomlReader<'_>, item: &Item<'_>) -> Option<Vec<Channel>> {
    let array = r.array("channels", item)?;
    let mut channels: Vec<Channel> = Vec::with_capacity(array.len());
    let mut ok = true;
    for (i, element) in array.iter().enumerate() {
        let name = format!("channels[{i}]");
        let Some(table) = r.table(&name, element) else {
            ok = false;
            continue;
        };
        let mut channel_type = None;
        let mut id = None;
        let mut this_ok = true;
        for (k, item) in table.iter() {
            match k.get_ref().as_ref() {
                "type" => match r.string(&format!("{name}.type"), item) {
                    Some(s) => match ChannelType::parse(&s) {
                        Some(t) => channel_type = Some(t),
                        None => {
                            let known: Vec<&str> =
                                ChannelType::ALL.iter().map(|t| t.as_str()).collect();
                            r.err(
                                item.span(),
                                format!(
                                    "unknown channel type \"{s}\" (known: {})",
                                    known.join(", ")
                                ),
                            );
                            this_ok = false;
                        }
                    },
                    None => this_ok = false,
                },
                "id" => match r.string(&format!("{name}.id"), item) {
                    Some(s) => match check_id("id", &s) {
                        Ok(()) => id = Some(s),
                        Err(e) => {
                            r.err(item.span(), format!("`{name}.id` {}", e.message));
                            this_ok = false;
                        }
                    },
                    None => this_ok = false,
                },
                _ => {
                    r.unknown_key(k, "a channel");
                    this_ok = false;
                }
            }
        }
        if !this_ok {
            ok = false;
            continue;
        }
        let Some(channel_type) = channel_type else {
            r.err(element.span(), format!("`{name}` needs a `type`"));
            ok = false;
            continue;
        };
        let channel = Channel { channel_type, id };
        if channels.contains(&channel) {
            r.err(element.span(), format!("`{name}` is listed twice"));
            ok = false;
            continue;
        }
        channels.push(channel);
    }
    ok.then_some(channels)
}
