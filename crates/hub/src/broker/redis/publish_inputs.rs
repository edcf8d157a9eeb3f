//! The publish script's inputs, by name, as `contract/publish-inputs.json` describes
//! them (the one description every publisher builds its `publish.lua` call from: this
//! file for the hub and its workers, the Python SDK's `_redis.py` for it): KEYS in the
//! order it lists, ARGV the inputs' values in the order of their names ('' for none),
//! then the state patch as field/value pairs. Values, not names, go on the wire: a
//! script that builds a table of its inputs costs Redis microseconds per publish
//! (`scripts/bench_redis_time.sh`). `tests/contract.rs` fails when the script, this
//! builder or the SDK's drifts from it.

use std::sync::LazyLock;

use serde::Deserialize;

use super::layout;
use crate::broker::{HistoryConfig, PreparedEvent};
use crate::wire::ProjectId;

/// The description, as the repository keeps it.
pub const CONTRACT_JSON: &str = include_str!("../../../../../contract/publish-inputs.json");

/// `contract/publish-inputs.json`, read.
#[derive(Debug, Deserialize)]
pub struct PublishInputs {
    /// The script's KEYS, in order (a name ending in `?` is passed only where it applies).
    pub keys: Vec<NamedKey>,
    /// Every input the script reads, by name, with what it means; passed in the order
    /// of their names (this map's).
    pub inputs: std::collections::BTreeMap<String, String>,
    /// The product's state fields a publisher may patch.
    pub state_fields: std::collections::BTreeMap<String, String>,
    /// The state fields the script keeps itself (a new run forgets all others).
    pub script_fields: Vec<String>,
    /// What the script answers: the id, or `{id, 1}` when the publish began a history
    /// or a run ([`answer`]).
    pub returns: String,
}

#[derive(Debug, Deserialize)]
pub struct NamedKey {
    pub name: String,
}

/// The description the hub was built with. It is a file of this repository, checked by
/// the tests: it cannot fail to parse in a build that passed them.
pub static CONTRACT: LazyLock<PublishInputs> = LazyLock::new(|| {
    serde_json::from_str(CONTRACT_JSON)
        .unwrap_or_else(|err| panic!("contract/publish-inputs.json does not parse: {err}"))
});

/// Where and how a publish goes: what the broker knows and the event does not.
pub struct Route<'a> {
    pub project: &'a ProjectId,
    pub channel: String,
    /// `PUBLISH` (one node) or `SPUBLISH` (a cluster).
    pub publish_command: &'static str,
    /// Whether the script checks the node's era (one node; see `era.rs`).
    pub era: bool,
    /// Whether the keys outside the project's slot are passed: the era, the webhook
    /// outbox and the runs under way (one node and Sentinel's primary; not a cluster).
    /// On Sentinel the era key is passed (it goes before the outbox) but never stamped.
    pub outbox: bool,
    pub new_epoch: String,
}

/// The script call publishing `event` along `route`, keeping history as `history` says.
pub fn invocation(
    route: &Route<'_>,
    event: &PreparedEvent,
    history: &HistoryConfig,
) -> redis::ScriptInvocation<'static> {
    let contract = &*CONTRACT;
    let mut call = layout::PUBLISH.prepare_invoke();
    for key in &contract.keys {
        match key.name.as_str() {
            "history" => call.key(layout::history_key(route.project)),
            "state" => call.key(layout::state_key(route.project)),
            "receipt" => call.key(layout::receipt_key(route.project, &event.receipt)),
            "fences" => call.key(layout::fences_key(route.project)),
            "units" => call.key(layout::units_key(route.project)),
            "era?" if route.era || route.outbox => call.key(layout::ERA_KEY),
            "outbox?" if route.outbox => call.key(layout::OUTBOX_KEY),
            "running?" if route.outbox => call.key(layout::RUNNING_KEY),
            _ => &mut call,
        };
    }
    let mut named = inputs(route, event, history);
    for name in contract.inputs.keys() {
        // An input the builder does not know goes as none: the drift test keeps the two
        // equal.
        let value = named
            .iter_mut()
            .find(|(known, _)| *known == name.as_str())
            .and_then(|(_, value)| value.take());
        call.arg(value.unwrap_or_default());
    }
    for (field, value) in &event.state.patch {
        call.arg(*field).arg(value);
    }
    call
}

/// The script's answer, as `returns` says: the event id, and whether the publish began
/// the project's history or a new run (`{id, 1}`; the id alone otherwise: a table answer
/// costs Redis time on every publish). `None` for any other answer.
pub fn answer(value: &redis::Value) -> Option<(String, bool)> {
    use redis::FromRedisValue;
    match value {
        redis::Value::Array(items) => match items.as_slice() {
            [id, begun] => Some((
                String::from_redis_value_ref(id).ok()?,
                i64::from_redis_value_ref(begun).ok()? == 1,
            )),
            _ => None,
        },
        id => Some((String::from_redis_value_ref(id).ok()?, false)),
    }
}

/// The named inputs of one publish; `None` for an input without a value.
fn inputs(
    route: &Route<'_>,
    event: &PreparedEvent,
    history: &HistoryConfig,
) -> Vec<(&'static str, Option<String>)> {
    let (t, s) = (&event.template, &event.state);
    let flag = |on: bool| on.then(|| "1".to_string());
    let named = [
        ("channel", Some(route.channel.clone())),
        ("publish", Some(route.publish_command.to_string())),
        ("new_epoch", Some(route.new_epoch.clone())),
        ("receipt", Some(event.receipt.clone())),
        ("keyed", flag(event.keyed)),
        ("retry", flag(event.retry)),
        ("max_len", Some(history.max_len.to_string())),
        ("max_bytes", Some(history.max_bytes.to_string())),
        (
            "active_ttl",
            Some(history.active_ttl.as_secs().max(1).to_string()),
        ),
        (
            "retention_ttl",
            Some(history.retention.as_secs().max(1).to_string()),
        ),
        ("head", Some(t.head.clone())),
        ("mid", Some(t.mid.clone())),
        ("tail", Some(t.tail.clone())),
        ("progress", t.progress.map(|p| p.to_string())),
        ("progress_floor", s.progress_floor.map(|p| p.to_string())),
        ("starts_run", flag(s.starts_run)),
        ("ends_run", flag(s.ends_run)),
        ("run_holder", s.run_holder.clone()),
        (
            "fence_holder",
            event.fence.as_ref().map(|f| f.holder.clone()),
        ),
        (
            "fence_token",
            event.fence.as_ref().map(|f| f.token.to_string()),
        ),
        ("fence_unit", s.unit.as_ref().map(|u| u.name.clone())),
        (
            "unit_done",
            s.unit
                .as_ref()
                .and_then(|u| u.done_of)
                .map(|n| n.to_string()),
        ),
        (
            "unit_progress",
            s.unit
                .as_ref()
                .and_then(|u| u.progress_span)
                .map(|(from, to)| format!("{from} {to}")),
        ),
    ];
    named.into()
}

/// Every input name this builder can send (for the drift test, `tests/contract.rs`).
#[doc(hidden)]
pub fn names_sent() -> Vec<&'static str> {
    use crate::broker::{Fence, FrameTemplate, StateChange};
    let event = PreparedEvent {
        kind: crate::wire::EventKind::Complete,
        template: FrameTemplate {
            head: String::new(),
            mid: String::new(),
            tail: String::new(),
            progress: Some(1),
        },
        state: StateChange {
            patch: Vec::new(),
            progress_floor: Some(1),
            starts_run: true,
            ends_run: true,
            run_holder: Some(String::new()),
            tags: None,
            unit: Some(crate::broker::Unit {
                name: String::new(),
                done_of: Some(1),
                progress_span: Some((0, 1)),
            }),
        },
        receipt: String::new(),
        keyed: true,
        retry: true,
        fence: Some(Fence {
            holder: String::new(),
            token: 1,
        }),
    };
    let project = ProjectId::parse("names").unwrap_or_else(|e| panic!("{e}"));
    let route = Route {
        project: &project,
        channel: String::new(),
        publish_command: "PUBLISH",
        era: true,
        outbox: true,
        new_epoch: String::new(),
    };
    inputs(&route, &event, &HistoryConfig::default())
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_the_contract_names_is_sent_and_no_other() {
        let mut sent = names_sent();
        sent.sort_unstable();
        let named: Vec<&str> = CONTRACT.inputs.keys().map(String::as_str).collect();
        assert_eq!(sent, named);
    }

    #[test]
    fn every_key_the_contract_names_is_known() {
        let known = [
            "history", "state", "receipt", "fences", "units", "era?", "outbox?", "running?",
        ];
        for key in &CONTRACT.keys {
            assert!(known.contains(&key.name.as_str()), "{}", key.name);
        }
        assert_eq!(CONTRACT.keys.len(), known.len());
    }
}
