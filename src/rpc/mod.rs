//! The JSON-RPC surface: the method table of rpc.md, params parsing, the error mapping and
//! the HTTP shims. The only module that names jsonrpsee server types. Each method is one
//! line here that parses its params and calls one function of `api`.
//!
//! Cost: jsonrpsee 0.26 validates every answer again before it sends it
//! (`MethodResponse::response` builds it with `RawValue::from_string`, and offers no other
//! constructor): a quarter of the instructions of a cached `preferences.evaluate` inside the
//! method (callgrind). Each result is serialised once, into one buffer (`to_wire`), so
//! that is the only second pass.

pub mod auth;
pub mod discover;
pub mod envelope;
pub mod error;
mod export;
pub mod http;
pub mod observe;
pub mod ops;
mod subscription;
pub mod wire;
pub mod ws;

use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::Error;
use crate::api::daemon::NoParams;
use crate::api::recipients::Kind;
use crate::api::{self, Context};
use crate::auth::NoDefaultSet;
use crate::model::ValidationError;
use crate::model::change::{Actor, Origin};

/// The version of this JSON-RPC protocol, shown by `daemon.status`; the CLI refuses to
/// talk to a daemon that speaks another.
pub const PROTOCOL: u32 = 1;

/// Registers one method: parse the params by name, run the body, map the error, and
/// serialise the result; and describes it for `rpc.discover` from the same params type.
macro_rules! method {
    ($module:ident, $name:literal, |$ctx:ident, $p:ident : $params:ty| $body:expr) => {
        $module
            .described
            .push(discover::Described::of::<$params>($name));
        $module
            .module
            .register_async_method($name, |params, ctx, _ext| async move {
                let $p: $params = parse_params(&params)?;
                let $ctx: &Context = &ctx;
                let result: Result<_, Error> = $body;
                to_wire(&result.map_err(ErrorObjectOwned::from)?)
            })?;
    };
    // The same, for a method that writes: its changes carry the call's origin.
    ($module:ident, $name:literal, |$ctx:ident, $p:ident : $params:ty, origin $o:ident| $body:expr) => {
        $module
            .described
            .push(discover::Described::of::<$params>($name));
        $module
            .module
            .register_async_method($name, |params, ctx, ext| async move {
                let $p: $params = parse_params(&params)?;
                let $ctx: &Context = &ctx;
                let $o = origin(&ext, $name)?;
                let result: Result<_, Error> = $body;
                to_wire(&result.map_err(ErrorObjectOwned::from)?)
            })?;
    };
    // The same, for a body that reads the call's extensions too.
    ($module:ident, $name:literal, |$ctx:ident, $p:ident : $params:ty, $ext:ident| $body:expr) => {
        $module
            .described
            .push(discover::Described::of::<$params>($name));
        $module
            .module
            .register_async_method($name, |params, ctx, $ext| async move {
                let $p: $params = parse_params(&params)?;
                let $ctx: &Context = &ctx;
                let result: Result<_, Error> = $body;
                to_wire(&result.map_err(ErrorObjectOwned::from)?)
            })?;
    };
}

/// The origin of a call's changes: the actor `rpc::auth` put into its extensions, and the
/// method. Every call passes that middleware, so a missing actor is a bug, refused rather
/// than logged without one.
fn origin(ext: &jsonrpsee::Extensions, method: &'static str) -> Result<Origin, ErrorObjectOwned> {
    match ext.get::<Actor>() {
        Some(actor) => Ok(Origin::new(actor.clone(), method)),
        None => Err(error::internal("the call has no actor")),
    }
}

/// Serialises a method's result once, into one buffer. jsonrpsee then writes it into the
/// response as one piece; given the value itself it writes it token by token through a
/// size-checking writer, which was 16% of the instructions of a 1000-recipient
/// `preferences.evaluate` (callgrind). The response size limit still applies.
fn to_wire<T: serde::Serialize>(result: &T) -> Result<Box<RawValue>, ErrorObjectOwned> {
    serde_json::value::to_raw_value(result).map_err(error::internal)
}

/// The whole API of rpc.md. (A table: one line per method, so rustfmt is told to leave
/// it as one.)
#[rustfmt::skip]
pub fn module(ctx: Arc<Context>) -> Result<RpcModule<Context>, jsonrpsee::core::RegisterMethodError> {
    use api::{audiences, bulk, daemon, evaluate, history, lists, recipients as r, tenants};
    let mut m = Table { module: RpcModule::from_arc(ctx), described: Vec::new() };

    method!(m, "users.identify", |c, p: r::IdentifyParams, origin o| r::identify(c, o, Kind::User, p).await);
    method!(m, "users.get", |c, p: r::ReadParams| r::get(c, Kind::User, p).await);
    method!(m, "users.delete", |c, p: r::WhoParams, origin o| r::delete(c, o, Kind::User, p).await);
    method!(m, "users.getPreferences", |c, p: r::GetPreferencesParams, ext| r::get_preferences(c, Kind::User, p, ext.get::<NoDefaultSet>().is_none()).await);
    method!(m, "users.setPreferences", |c, p: r::SetPreferencesParams, origin o| r::set_preferences(c, o, Kind::User, p).await);
    method!(m, "users.unsetPreferences", |c, p: r::UnsetPreferencesParams, origin o| r::unset_preferences(c, o, Kind::User, p).await);
    method!(m, "users.listPreferences", |c, p: r::ReadParams| r::list_preferences(c, Kind::User, p).await);
    method!(m, "users.list", |c, p: lists::RecipientsParams| lists::recipients(c, Kind::User, p).await);
    method!(m, "users.merge", |c, p: r::MergeParams, origin o| r::merge(c, o, p).await);
    method!(m, "users.bulkSetPreferences", |c, p: bulk::BulkSetParams| bulk::bulk_set(c, p).await);
    method!(m, "users.bulkIdentify", |c, p: bulk::BulkIdentifyParams| bulk::bulk_identify(c, p).await);
    method!(m, "users.bulkDelete", |c, p: bulk::BulkDeleteUsersParams| bulk::bulk_delete_users(c, p).await);

    method!(m, "objects.set", |c, p: r::IdentifyParams, origin o| r::identify(c, o, Kind::Object, p).await);
    method!(m, "objects.get", |c, p: r::ReadParams| r::get(c, Kind::Object, p).await);
    method!(m, "objects.delete", |c, p: r::WhoParams, origin o| r::delete(c, o, Kind::Object, p).await);
    method!(m, "objects.getPreferences", |c, p: r::GetPreferencesParams, ext| r::get_preferences(c, Kind::Object, p, ext.get::<NoDefaultSet>().is_none()).await);
    method!(m, "objects.setPreferences", |c, p: r::SetPreferencesParams, origin o| r::set_preferences(c, o, Kind::Object, p).await);
    method!(m, "objects.unsetPreferences", |c, p: r::UnsetPreferencesParams, origin o| r::unset_preferences(c, o, Kind::Object, p).await);
    method!(m, "objects.listPreferences", |c, p: r::ReadParams| r::list_preferences(c, Kind::Object, p).await);
    method!(m, "objects.list", |c, p: lists::RecipientsParams| lists::recipients(c, Kind::Object, p).await);
    method!(m, "objects.bulkSet", |c, p: bulk::BulkSetObjectsParams| bulk::bulk_set_objects(c, p).await);
    method!(m, "objects.bulkDelete", |c, p: bulk::BulkDeleteObjectsParams| bulk::bulk_delete_objects(c, p).await);

    method!(m, "tenants.set", |c, p: tenants::SetParams, origin o| tenants::set(c, o, p).await);
    method!(m, "tenants.get", |c, p: tenants::GetParams| tenants::get(c, p).await);
    method!(m, "tenants.delete", |c, p: tenants::DeleteParams, origin o| tenants::delete(c, o, p).await);
    method!(m, "tenants.list", |c, p: lists::TenantsParams| lists::tenants(c, p).await);
    method!(m, "tenants.bulkSet", |c, p: bulk::BulkSetTenantsParams| bulk::bulk_set_tenants(c, p).await);
    method!(m, "tenants.bulkDelete", |c, p: bulk::BulkDeleteTenantsParams| bulk::bulk_delete_tenants(c, p).await);

    method!(m, "audiences.addMembers", |c, p: audiences::MembersParams, origin o| audiences::add_members(c, o, p).await);
    method!(m, "audiences.removeMembers", |c, p: audiences::MembersParams, origin o| audiences::remove_members(c, o, p).await);
    method!(m, "audiences.listMembers", |c, p: audiences::ListParams| audiences::list_members(c, p).await);

    method!(m, "changes.list", |c, p: history::ListParams| history::list(c, p).await);
    method!(m, "users.getPreferenceHistory", |c, p: history::HistoryParams| history::preference_history(c, Kind::User, p).await);
    method!(m, "objects.getPreferenceHistory", |c, p: history::HistoryParams| history::preference_history(c, Kind::Object, p).await);
    subscription::register_changes(&mut m.module)?;
    m.described.push(discover::Described::of::<subscription::ChangesParams>("changes.subscribe"));
    m.described.push(discover::Described::positional("changes.unsubscribe", "subscription"));

    method!(m, "bulkOperations.get", |c, p: bulk::GetParams| bulk::get(c, p).await);
    method!(m, "bulkOperations.list", |c, p: bulk::ListParams| bulk::list(c, p).await);
    subscription::register(&mut m.module)?;
    m.described.push(discover::Described::of::<bulk::GetParams>("bulkOperations.subscribe"));
    m.described.push(discover::Described::positional("bulkOperations.unsubscribe", "subscription"));

    method!(m, "preferences.evaluate", |c, p: evaluate::EvaluateParams, origin o| evaluate::evaluate(c, o, p).await);

    method!(m, "config.status", |c, _p: NoParams| Ok(daemon::config_status(c)));
    method!(m, "config.reload", |c, _p: NoParams| daemon::config_reload(c).await);
    method!(m, "daemon.ping", |_c, _p: NoParams| Ok(daemon::ping()));
    method!(m, "daemon.status", |c, _p: NoParams| daemon::status(c, PROTOCOL).await);
    method!(m, "daemon.backup", |c, p: api::backup::BackupParams| api::backup::backup(c, p).await);
    export::register(&mut m.module)?;
    m.described.push(discover::Described::of::<NoParams>("daemon.export"));
    m.described.push(discover::Described::positional("daemon.exportCancel", "subscription"));

    // Last, so that it describes every method, itself included.
    m.described.push(discover::Described::of::<NoParams>("rpc.discover"));
    let document = discover::document(&m.described);
    m.module.register_method("rpc.discover", move |params, _ctx, _ext| {
        let _: NoParams = parse_params(&params)?;
        Ok::<_, ErrorObjectOwned>(document.clone())
    })?;
    Ok(m.module)
}

/// The method table as `module` fills it: the methods, and their descriptions for
/// `rpc.discover`.
struct Table {
    module: RpcModule<Context>,
    described: Vec<discover::Described>,
}

/// Parses params given by name (rpc.md: a JSON object; absent or `null` reads as `{}`).
/// Errors name the param: a missing one, an unknown one, or one of the wrong type.
pub fn parse_params<T: DeserializeOwned>(params: &Params<'_>) -> Result<T, Error> {
    let text = params.as_str().unwrap_or("{}");
    let text = if text.trim() == "null" { "{}" } else { text };
    if !text.trim_start().starts_with('{') {
        return Err(Error::invalid(
            "params",
            "must be an object of named params",
        ));
    }
    // The plain parse first: tracking the path costs a tenth of a small call's
    // instructions (callgrind), and only a refused params object needs it, so that one is
    // parsed again for its message.
    if let Ok(params) = serde_json::from_str(text) {
        return Ok(params);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde's messages end with " at line L column C", which means nothing to a caller
        // who sent params inside a request.
        let inner = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        let (field, message) = field_error(&path, &inner);
        Error::Invalid(ValidationError::one(field, message))
    })
}

/// Turns serde's message into a field name and a message about that field.
fn field_error(path: &str, message: &str) -> (String, String) {
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_string);
    let join = |name: String| {
        if path == "." || path.is_empty() {
            name
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(rest) = message.strip_prefix("missing field ")
        && let Some(name) = quoted(rest)
    {
        return (join(name), "is required".into());
    }
    if let Some(rest) = message.strip_prefix("unknown field ")
        && let Some(name) = quoted(rest)
    {
        let expected = rest
            .split_once(", expected ")
            .map(|(_, e)| format!("; expected {e}"))
            .unwrap_or_default();
        // serde_path_to_error's path already ends at the unknown key.
        let field = if path.rsplit('.').next() == Some(name.as_str()) {
            path.to_string()
        } else {
            join(name)
        };
        return (field, format!("unknown param{expected}"));
    }
    // A key given twice (a params field: serde's "duplicate field"; a key inside a JSON
    // value: `api::strict`) is named by its path; the error is raised in the object
    // holding it, so the path ends there.
    for prefix in ["duplicate field ", crate::api::strict::DUPLICATE_KEY] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(name) = quoted(rest)
        {
            return (join(name), "is given more than once".into());
        }
    }
    let field = if path == "." || path.is_empty() {
        "params".to_string()
    } else {
        path.to_string()
    };
    (field, message.to_string())
}
