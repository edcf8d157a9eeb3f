//! The publish script's inputs, by name, as `contract/publish-inputs.json` describes
//! them (the one description every publisher builds its `publish.lua` call from: this
//! file for the hub and its workers, the Python SDK's `_redis.py` for it): KEYS in the
//! order it lists; ARGV the values of the inputs every publish gives in the order of
//! their names, then how many of the others (`given_only`) follow and those, in the
//! order it lists them, up to the last one given ('' for one before it with none); then
//! the state patch as field/value pairs. Values, not names, go on the wire, and no
//! value a publish does not give: a script that builds a table of its inputs, and
//! every value handed to it (an empty one too), costs Redis time per publish
//! (`scripts/bench_redis_time.sh`). `tests/contract.rs` fails when the script, this
//! builder or the SDK's drifts from it.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisResult, RedisWrite, ToRedisArgs};
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
    /// Every input the script reads, by name, with what it means; those not in
    /// `given_only` passed in the order of their names (this map's).
    pub inputs: std::collections::BTreeMap<String, String>,
    /// The inputs a publish passes only up to the last one it gives, in this order,
    /// after their count.
    pub given_only: Vec<String>,
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
///
/// Built straight into one `EVALSHA` command: every value is written once into the
/// command's buffer from where the event holds it (no copy of the frame's parts, no
/// string per input or key), the inputs in the contract's order worked out once. A
/// `redis::ScriptInvocation` keeps one allocation per argument and copies them all into
/// its command again; with the inputs sent by name and looked up per call, building the
/// call was a tenth of the hub's instructions per HTTP publish (BENCHMARKS.md,
/// "Publish-path spread: A/B of the contract merge").
pub fn invocation(
    route: &Route<'_>,
    event: &PreparedEvent,
    history: &HistoryConfig,
) -> PublishCall {
    let keys = &*KEY_ORDER;
    let passed = |key: &&Key| match key {
        Key::Era => route.era || route.outbox,
        Key::Outbox | Key::Running => route.outbox,
        Key::Unknown => false,
        Key::History | Key::State | Key::Receipt | Key::Fences | Key::Units => true,
    };
    let key_count = keys.iter().filter(passed).count();
    let (inputs, given_only) = &*INPUT_ORDER;
    let given: Vec<Value<'_>> = given_only
        .iter()
        .map(|input| input.map_or(Value::None, |input| input.value(route, event, history)))
        .collect();
    // ('' is none to the script: an empty text is trimmed as none is)
    let last = given
        .iter()
        .rposition(|v| !matches!(v, Value::None | Value::Text("")));
    let given = &given[..last.map_or(0, |at| at + 1)];
    let t = &event.template;
    let args = 4 + key_count + inputs.len() + given.len() + 2 * event.state.patch.len();
    let bytes = 256
        + t.head.len()
        + t.mid.len()
        + t.tail.len()
        + event
            .state
            .patch
            .iter()
            .map(|(field, value)| field.len() + value.len())
            .sum::<usize>();
    let mut cmd = Cmd::with_capacity(args, bytes);
    cmd.arg("EVALSHA")
        .arg(layout::PUBLISH.get_hash())
        .arg(key_count);
    // One buffer for the project's keys.
    let mut buffer = String::with_capacity(64);
    let mut project_key = |cmd: &mut Cmd, parts: &[&str]| {
        layout::project_key_into(&mut buffer, route.project, parts);
        cmd.arg(buffer.as_str());
    };
    for key in keys.iter().filter(passed) {
        match key {
            Key::History => project_key(&mut cmd, &["history"]),
            Key::State => project_key(&mut cmd, &["state"]),
            Key::Receipt => project_key(&mut cmd, &["pub:", &event.receipt]),
            Key::Fences => project_key(&mut cmd, &["fences"]),
            Key::Units => project_key(&mut cmd, &["units"]),
            Key::Era => {
                cmd.arg(layout::ERA_KEY);
            }
            Key::Outbox => {
                cmd.arg(layout::OUTBOX_KEY);
            }
            Key::Running => {
                cmd.arg(layout::RUNNING_KEY);
            }
            Key::Unknown => {}
        }
    }
    for input in inputs {
        // An input the builder does not know goes as none: the drift test keeps the two
        // equal.
        let value = input.map_or(Value::None, |input| input.value(route, event, history));
        cmd.arg(value);
    }
    cmd.arg(given.len());
    for value in given {
        cmd.arg(*value);
    }
    for (field, value) in &event.state.patch {
        cmd.arg(*field).arg(value.as_str());
    }
    PublishCall(cmd)
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

/// One `publish.lua` call, ready to send.
pub struct PublishCall(Cmd);

impl PublishCall {
    /// Sends the call; a Redis that does not have the script yet (`NOSCRIPT`: new,
    /// restarted or flushed) is given it and asked again, as `redis::Script` does.
    pub async fn invoke_async<T: FromRedisValue>(
        &self,
        conn: &mut (impl ConnectionLike + Send),
    ) -> RedisResult<T> {
        match self.0.query_async(conn).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                layout::PUBLISH.load_async(conn).await?;
                self.0.query_async(conn).await
            }
            answer => answer,
        }
    }

    /// The command's arguments (for tests).
    #[doc(hidden)]
    pub fn args(&self) -> Vec<Vec<u8>> {
        self.0
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                // No cursor is ever written.
                _ => Vec::new(),
            })
            .collect()
    }
}

/// The script's keys, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    History,
    State,
    Receipt,
    Fences,
    Units,
    Era,
    Outbox,
    Running,
    /// A key this builder does not know: not passed (the key test keeps the two equal).
    Unknown,
}

/// The contract's keys, in its order.
static KEY_ORDER: LazyLock<Vec<Key>> = LazyLock::new(|| {
    CONTRACT
        .keys
        .iter()
        .map(|key| match key.name.as_str() {
            "history" => Key::History,
            "state" => Key::State,
            "receipt" => Key::Receipt,
            "fences" => Key::Fences,
            "units" => Key::Units,
            "era?" => Key::Era,
            "outbox?" => Key::Outbox,
            "running?" => Key::Running,
            _ => Key::Unknown,
        })
        .collect()
});

/// The contract's inputs every publish gives, in the order of their names, and its
/// `given_only` ones, in the order listed (`None`: one this builder does not know).
#[allow(clippy::type_complexity)]
static INPUT_ORDER: LazyLock<(Vec<Option<Input>>, Vec<Option<Input>>)> = LazyLock::new(|| {
    let known = |name: &str| Input::ALL.into_iter().find(|input| input.name() == name);
    let always = CONTRACT
        .inputs
        .keys()
        .filter(|name| !CONTRACT.given_only.contains(name))
        .map(|name| known(name))
        .collect();
    let given_only = CONTRACT.given_only.iter().map(|name| known(name)).collect();
    (always, given_only)
});

/// Every input this builder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Channel,
    Publish,
    NewEpoch,
    Receipt,
    Keyed,
    Retry,
    MaxLen,
    MaxBytes,
    ActiveTtl,
    RetentionTtl,
    Head,
    Mid,
    Tail,
    Progress,
    ProgressFloor,
    StartsRun,
    EndsRun,
    RunHolder,
    FenceHolder,
    FenceToken,
    FenceUnit,
    UnitDone,
    UnitProgress,
}

/// One input's value, borrowed from the publish and written straight into the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    /// No value: `''`.
    None,
    Text(&'a str),
    Number(u64),
    /// `'a b'`.
    Span(u8, u8),
}

impl ToRedisArgs for Value<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        match *self {
            Value::None => out.write_arg(b""),
            Value::Text(text) => out.write_arg(text.as_bytes()),
            Value::Number(n) => n.write_redis_args(out),
            Value::Span(from, to) => out.write_arg_fmt(format_args!("{from} {to}")),
        }
    }
}

fn number(n: usize) -> Value<'static> {
    Value::Number(u64::try_from(n).unwrap_or(u64::MAX))
}

impl Input {
    const ALL: [Self; 23] = [
        Self::Channel,
        Self::Publish,
        Self::NewEpoch,
        Self::Receipt,
        Self::Keyed,
        Self::Retry,
        Self::MaxLen,
        Self::MaxBytes,
        Self::ActiveTtl,
        Self::RetentionTtl,
        Self::Head,
        Self::Mid,
        Self::Tail,
        Self::Progress,
        Self::ProgressFloor,
        Self::StartsRun,
        Self::EndsRun,
        Self::RunHolder,
        Self::FenceHolder,
        Self::FenceToken,
        Self::FenceUnit,
        Self::UnitDone,
        Self::UnitProgress,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Channel => "channel",
            Self::Publish => "publish",
            Self::NewEpoch => "new_epoch",
            Self::Receipt => "receipt",
            Self::Keyed => "keyed",
            Self::Retry => "retry",
            Self::MaxLen => "max_len",
            Self::MaxBytes => "max_bytes",
            Self::ActiveTtl => "active_ttl",
            Self::RetentionTtl => "retention_ttl",
            Self::Head => "head",
            Self::Mid => "mid",
            Self::Tail => "tail",
            Self::Progress => "progress",
            Self::ProgressFloor => "progress_floor",
            Self::StartsRun => "starts_run",
            Self::EndsRun => "ends_run",
            Self::RunHolder => "run_holder",
            Self::FenceHolder => "fence_holder",
            Self::FenceToken => "fence_token",
            Self::FenceUnit => "fence_unit",
            Self::UnitDone => "unit_done",
            Self::UnitProgress => "unit_progress",
        }
    }

    /// This input's value in one publish.
    fn value<'a>(
        self,
        route: &'a Route<'_>,
        event: &'a PreparedEvent,
        history: &HistoryConfig,
    ) -> Value<'a> {
        let (t, s) = (&event.template, &event.state);
        let flag = |on: bool| if on { Value::Text("1") } else { Value::None };
        let text = |value: Option<&'a str>| value.map_or(Value::None, Value::Text);
        let unit = s.unit.as_ref();
        match self {
            Self::Channel => Value::Text(&route.channel),
            Self::Publish => Value::Text(route.publish_command),
            Self::NewEpoch => Value::Text(&route.new_epoch),
            Self::Receipt => Value::Text(&event.receipt),
            Self::Keyed => flag(event.keyed),
            Self::Retry => flag(event.retry),
            Self::MaxLen => number(history.max_len),
            Self::MaxBytes => number(history.max_bytes),
            Self::ActiveTtl => Value::Number(history.active_ttl.as_secs().max(1)),
            Self::RetentionTtl => Value::Number(history.retention.as_secs().max(1)),
            Self::Head => Value::Text(&t.head),
            Self::Mid => Value::Text(&t.mid),
            Self::Tail => Value::Text(&t.tail),
            Self::Progress => t.progress.map_or(Value::None, |p| Value::Number(p.into())),
            Self::ProgressFloor => s
                .progress_floor
                .map_or(Value::None, |p| Value::Number(p.into())),
            Self::StartsRun => flag(s.starts_run),
            Self::EndsRun => flag(s.ends_run),
            Self::RunHolder => text(s.run_holder.as_deref()),
            Self::FenceHolder => text(event.fence.as_ref().map(|f| f.holder.as_str())),
            Self::FenceToken => event
                .fence
                .as_ref()
                .map_or(Value::None, |f| Value::Number(f.token)),
            Self::FenceUnit => text(unit.map(|u| u.name.as_str())),
            Self::UnitDone => unit
                .and_then(|u| u.done_of)
                .map_or(Value::None, |n| Value::Number(n.into())),
            Self::UnitProgress => unit
                .and_then(|u| u.progress_span)
                .map_or(Value::None, |(from, to)| Value::Span(from, to)),
        }
    }
}

/// Every input name this builder can send (for the drift test, `tests/contract.rs`): the
/// inputs that have a value in a publish that sets every one.
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
    let history = HistoryConfig::default();
    Input::ALL
        .into_iter()
        .filter(|input| input.value(&route, &event, &history) != Value::None)
        .map(Input::name)
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

    /// The command carries the script's hash, its keys in the contract's order, the value
    /// of every input outside `given_only` in the order of their names, then how many
    /// `given_only` values follow and those in its order, then the patch.
    #[test]
    fn the_call_is_the_contract_in_order() {
        use crate::broker::{Fence, FrameTemplate, StateChange, Unit};
        let project = ProjectId::parse("p-1").unwrap();
        let mut state = StateChange {
            progress_floor: Some(100),
            starts_run: true,
            ends_run: true,
            run_holder: Some("job-q".into()),
            unit: Some(Unit {
                name: "u-3".into(),
                done_of: Some(4),
                progress_span: Some((10, 90)),
            }),
            ..StateChange::default()
        };
        state.set("status", Some("RENDERING"));
        state.set("estimated_remaining", None);
        let event = PreparedEvent {
            kind: crate::wire::EventKind::ProgressUpdate,
            template: FrameTemplate {
                head: "{\"id\":\"".into(),
                mid: "\",".into(),
                tail: "}".into(),
                progress: Some(42),
            },
            state,
            receipt: "r-9".into(),
            keyed: true,
            retry: true,
            fence: Some(Fence {
                holder: "job-1".into(),
                token: 7,
            }),
        };
        let route = Route {
            project: &project,
            channel: "progress:p-1".into(),
            publish_command: "PUBLISH",
            era: true,
            outbox: true,
            new_epoch: "E".into(),
        };
        let history = HistoryConfig::default();
        let expected_value = |name: &str| -> String {
            match name {
                "channel" => "progress:p-1".into(),
                "publish" => "PUBLISH".into(),
                "new_epoch" => "E".into(),
                "receipt" => "r-9".into(),
                "keyed" | "retry" | "starts_run" | "ends_run" => "1".into(),
                "max_len" => history.max_len.to_string(),
                "max_bytes" => history.max_bytes.to_string(),
                "active_ttl" => history.active_ttl.as_secs().to_string(),
                "retention_ttl" => history.retention.as_secs().to_string(),
                "head" => "{\"id\":\"".into(),
                "mid" => "\",".into(),
                "tail" => "}".into(),
                "progress" => "42".into(),
                "progress_floor" => "100".into(),
                "run_holder" => "job-q".into(),
                "fence_holder" => "job-1".into(),
                "fence_token" => "7".into(),
                "fence_unit" => "u-3".into(),
                "unit_done" => "4".into(),
                "unit_progress" => "10 90".into(),
                other => panic!("an input this test does not know: {other}"),
            }
        };
        let mut expected: Vec<String> = vec!["EVALSHA".into(), layout::PUBLISH.get_hash().into()];
        let keys: Vec<String> = CONTRACT
            .keys
            .iter()
            .map(|key| match key.name.as_str() {
                "history" => layout::history_key(&project),
                "state" => layout::state_key(&project),
                "receipt" => layout::receipt_key(&project, "r-9"),
                "fences" => layout::fences_key(&project),
                "units" => layout::units_key(&project),
                "era?" => layout::ERA_KEY.into(),
                "outbox?" => layout::OUTBOX_KEY.into(),
                "running?" => layout::RUNNING_KEY.into(),
                other => panic!("a key this test does not know: {other}"),
            })
            .collect();
        expected.push(keys.len().to_string());
        expected.extend(keys);
        let always: Vec<&String> = CONTRACT
            .inputs
            .keys()
            .filter(|name| !CONTRACT.given_only.contains(name))
            .collect();
        expected.extend(always.iter().map(|name| expected_value(name)));
        expected.push(CONTRACT.given_only.len().to_string());
        expected.extend(CONTRACT.given_only.iter().map(|name| expected_value(name)));
        expected.extend(["status", "RENDERING", "estimated_remaining", ""].map(String::from));
        let sent: Vec<String> = invocation(&route, &event, &history)
            .args()
            .into_iter()
            .map(|arg| String::from_utf8(arg).unwrap())
            .collect();
        assert_eq!(sent, expected);

        // On a cluster the keys outside the project's slot are not passed; `given_only`
        // inputs go up to the last one with a value, those before it without one as ''.
        let cluster = Route {
            era: false,
            outbox: false,
            publish_command: "SPUBLISH",
            ..route
        };
        let plain = PreparedEvent {
            keyed: false,
            fence: None,
            state: StateChange::default(),
            ..event
        };
        let sent = invocation(&cluster, &plain, &history).args();
        let in_slot = CONTRACT
            .keys
            .iter()
            .filter(|key| !key.name.ends_with('?'))
            .count();
        assert_eq!(sent[2], in_slot.to_string().into_bytes());
        let text = |at: usize| String::from_utf8(sent[at].clone()).unwrap();
        let value =
            |name: &str| text(3 + in_slot + always.iter().position(|n| *n == name).unwrap());
        assert_eq!(value("publish"), "SPUBLISH");
        let count_at = 3 + in_slot + always.len();
        // `retry` (listed right after `progress`) still goes, the others not.
        let given = ["progress", "retry"];
        assert_eq!(CONTRACT.given_only[..2], given);
        assert_eq!(text(count_at), "2");
        assert_eq!(text(count_at + 1), "42");
        assert_eq!(text(count_at + 2), "1");
        assert_eq!(sent.len(), count_at + 3);
        // A plain log gives none of them.
        let log = PreparedEvent {
            retry: false,
            template: FrameTemplate {
                progress: None,
                ..plain.template.clone()
            },
            ..plain.clone()
        };
        let sent = invocation(&cluster, &log, &history).args();
        assert_eq!(sent[count_at], b"0".to_vec());
        assert_eq!(sent.len(), count_at + 1);
        // An empty text is none: not sent either (a QUEUED update with an empty job).
        let empty_holder = PreparedEvent {
            state: StateChange {
                run_holder: Some(String::new()),
                ..StateChange::default()
            },
            ..log.clone()
        };
        let sent = invocation(&cluster, &empty_holder, &history).args();
        assert_eq!(sent[count_at], b"0".to_vec());
        assert_eq!(sent.len(), count_at + 1);
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
