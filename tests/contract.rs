//! The contract other-language clients ship, rendered from the one place it lives:
//! `contract/error-catalog.json` is the error catalog of `crates/hub/src/catalog.rs` in both
//! locales (and, under `subscription_errors`, the codes of a multiplexed connection's
//! `subscription_error` frames, `crates/hub/src/wire/subscription_error.rs`), `contract/state-labels.json` the texts an event writes into a project's
//! state (stage labels, the `complete` texts), read through the publish path itself, and
//! `contract/publisher-defaults.json` the publisher's defaults (history length, key
//! lifetimes, coalescing window), `contract/wire-values.json` the closed sets of values
//! frames carry (stages in their order, previous stages, `complete` statuses, log levels,
//! the queued status), read from the JSON Schema of the wire types. The Python SDK
//! packages these files (its validation, docstrings and docs/PYTHON.md come from them)
//! and the TypeScript client generates its closed types from them; this test fails when they
//! drift from the code.
//! `UPDATE_CONTRACT=1 cargo test --test contract` rewrites them.

use progress_hub::broker::HistoryConfig;
use progress_hub::catalog::ErrorCode;
use progress_hub::config::DEFAULT_COALESCE_WINDOW;
use progress_hub::locale::Locale;
use progress_hub::publish::prepare::prepare;
use progress_hub::wire::event::ProgressStatus;
use progress_hub::wire::{Event, ProjectId, Stage, SubscriptionErrorCode};
use serde_json::{Map, Value, json};

const LOCALES: [(&str, Locale); 2] = [("zh-TW", Locale::ZhTw), ("en", Locale::En)];

fn error_catalog() -> Value {
    let mut codes = Map::new();
    for code in ErrorCode::all() {
        let entry = code.entry();
        let mut texts = Map::new();
        for (name, locale) in LOCALES {
            texts.insert(
                name.into(),
                json!({"message": entry.message(locale), "solutions": entry.solutions(locale)}),
            );
        }
        let name = serde_json::to_value(code).unwrap_or(Value::Null);
        let Value::String(name) = name else {
            panic!("{code:?} does not serialize as a string");
        };
        codes.insert(
            name,
            json!({"is_retryable": entry.retryable, "locales": texts}),
        );
    }
    let mut refusals = Map::new();
    for code in SubscriptionErrorCode::all() {
        let Value::String(name) = serde_json::to_value(code).unwrap_or(Value::Null) else {
            panic!("{code:?} does not serialize as a string");
        };
        refusals.insert(
            name,
            json!({"is_retryable": code.is_retryable(), "message": code.message()}),
        );
    }
    json!({"codes": codes, "subscription_errors": refusals})
}

/// `current_stage` as an event of this JSON leaves it in the state.
fn state_text(event: Value, locale: Locale) -> Value {
    let event = Event::from_json(event.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let project = ProjectId::parse("contract").unwrap_or_else(|e| panic!("{e}"));
    let state = prepare(event, &project, locale, None, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .state;
    state
        .get("current_stage")
        .map(|text| Value::String(text.to_string()))
        .unwrap_or(Value::Null)
}

fn state_labels() -> Value {
    let mut out = Map::new();
    for (name, locale) in LOCALES {
        let mut stages = Map::new();
        for stage in Stage::ALL {
            let change = json!({"event": "stage_change", "data": {"current_stage": stage.as_str(), "progress": 0}});
            stages.insert(stage.as_str().into(), state_text(change, locale));
        }
        let mut complete = Map::new();
        for status in ["COMPLETED", "FAILED", "CANCELLED"] {
            let event = json!({"event": "complete", "data": {"status": status}});
            complete.insert(status.into(), state_text(event, locale));
        }
        out.insert(
            name.into(),
            json!({"stage_change": stages, "complete": complete}),
        );
    }
    Value::Object(out)
}

fn publisher_defaults() -> Value {
    let history = HistoryConfig::default();
    json!({
        "history_len": history.max_len,
        "history_bytes": history.max_bytes,
        "active_ttl_s": history.active_ttl.as_secs(),
        "retention_s": history.retention.as_secs(),
        "coalesce_window_ms": u64::try_from(DEFAULT_COALESCE_WINDOW.as_millis()).unwrap_or(u64::MAX),
    })
}

/// The values of the wire enum `name`, in declaration order, as its JSON Schema lists
/// them (`enum`, or a `oneOf` of `const`s when its variants carry doc comments).
fn enum_values(schema: &Value, name: &str) -> Value {
    let definition = &schema["$defs"][name];
    if let Some(values) = definition.get("enum") {
        return values.clone();
    }
    let consts: Vec<Value> = definition["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} is not an enum in the schema: {definition}"))
        .iter()
        .map(|variant| variant["const"].clone())
        .collect();
    Value::Array(consts)
}

fn wire_values() -> Value {
    let schema = progress_hub::wire::schema::events_schema();
    json!({
        "stages": enum_values(&schema, "Stage"),
        "previous_stages": enum_values(&schema, "PreviousStage"),
        "log_levels": enum_values(&schema, "LogLevel"),
        "complete_statuses": enum_values(&schema, "CompleteStatus"),
        // A run accepted and waiting for a worker (issue 23: a new run is a new run).
        "queued_status": ProgressStatus::Queued.as_str(),
    })
}

fn check(file: &str, rendered: &Value) {
    let path = format!("{}/contract/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = serde_json::to_string_pretty(rendered).unwrap_or_default() + "\n";
    if std::env::var_os("UPDATE_CONTRACT").is_some() {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{path}: {e}"));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{path} differs from the code; run UPDATE_CONTRACT=1 cargo test --test contract"
    );
}

#[test]
fn error_catalog_json_is_the_catalog() {
    let catalog = error_catalog();
    assert_eq!(
        catalog["codes"].as_object().map(Map::len),
        Some(ErrorCode::all().count())
    );
    assert_eq!(
        catalog["subscription_errors"].as_object().map(Map::len),
        Some(SubscriptionErrorCode::all().count())
    );
    check("error-catalog.json", &catalog);
}

#[test]
fn state_labels_json_is_what_events_write() {
    check("state-labels.json", &state_labels());
}

#[test]
fn wire_values_json_is_the_wire_enums() {
    let values = wire_values();
    let stages: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(values["stages"], json!(stages), "the stages in their order");
    let previous: Vec<&str> = std::iter::once("INITIALIZED").chain(stages).collect();
    assert_eq!(
        values["previous_stages"],
        json!(previous),
        "INITIALIZED, then the stages"
    );
    check("wire-values.json", &values);
}

#[test]
fn publisher_defaults_json_is_the_defaults() {
    check("publisher-defaults.json", &publisher_defaults());
}

/// The names a Lua or Python source reads with `<prefix>NAME` (`input.channel`,
/// `inputs["channel"]`), sorted.
fn names_after(source: &str, prefix: &str, end: &[char]) -> Vec<String> {
    let mut names: Vec<String> = source
        .match_indices(prefix)
        .map(|(at, _)| {
            let rest = &source[at + prefix.len()..];
            let stop = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            assert!(
                rest[stop..].starts_with(end),
                "{prefix}{} is not a name",
                &rest[..stop]
            );
            rest[..stop].to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// One description of the publish inputs (contract/publish-inputs.json): the script takes
// exactly the inputs it names, in the order it gives (of their names, then `given_only`'s),
// the state patch after them,
// and keeps exactly the fields it calls the script's own; the hub's builder sends exactly
// them; the Python SDK's builder names exactly them, and packages the file.
#[test]
fn the_publish_script_and_its_callers_read_one_description_of_its_inputs() {
    use progress_hub::broker::redis::publish_inputs::{CONTRACT, names_sent};
    let described: Vec<String> = CONTRACT.inputs.keys().cloned().collect();
    let lua = read("crates/hub/src/broker/redis/publish.lua");
    // The locals a `local a, b, ... = <taken>` line of the script names, in order.
    let locals_of = |taken: &str| -> Vec<String> {
        assert!(
            lua.contains(taken),
            "publish.lua takes its inputs as {taken}"
        );
        lua.split(taken)
            .next()
            .and_then(|before| before.rsplit("\nlocal ").next())
            .unwrap_or_default()
            .split(',')
            .map(|name| name.trim().to_string())
            .collect()
    };
    let mut always: Vec<String> = described
        .iter()
        .filter(|name| !CONTRACT.given_only.contains(name))
        .cloned()
        .collect();
    always.push("given".into());
    let taken = format!("= unpack(ARGV, 1, {})", always.len());
    assert_eq!(
        locals_of(&taken),
        always,
        "the inputs every publish gives publish.lua, in order, and the count of the others"
    );
    let start = always.len() + 1;
    let taken = format!("= unpack(ARGV, {start}, {} + given)", start - 1);
    assert_eq!(
        locals_of(&taken),
        CONTRACT.given_only,
        "the inputs publish.lua takes as given, in order"
    );
    assert!(
        CONTRACT
            .given_only
            .iter()
            .all(|name| described.contains(name)),
        "given_only names inputs"
    );
    assert_eq!(
        lua.matches(&format!("<= {}", CONTRACT.given_only.len()))
            .count(),
        1,
        "publish.lua checks the count of given inputs"
    );
    assert!(
        lua.contains(&format!("local PATCH_AT = {start} + given\n")),
        "publish.lua's state patch follows its inputs"
    );
    let fields = lua
        .split("local SCRIPT_FIELDS = {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default();
    let mut in_lua: Vec<String> = fields
        .split(',')
        .filter_map(|f| f.split('=').next())
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    in_lua.sort();
    let mut script_fields = CONTRACT.script_fields.clone();
    script_fields.sort();
    assert_eq!(in_lua, script_fields, "publish.lua's own state fields");
    for field in CONTRACT.state_fields.keys() {
        assert!(
            !script_fields.contains(field),
            "{field} is both the script's and the publisher's"
        );
    }
    let mut sent: Vec<String> = names_sent().into_iter().map(String::from).collect();
    sent.sort();
    assert_eq!(sent, described, "the inputs the hub sends");
    let python = read("clients/python/src/progress_hub/_redis.py");
    let builder = python
        .split("inputs: dict[str, str | None] = {")
        .nth(1)
        .and_then(|rest| rest.split("\n    }\n").next())
        .unwrap_or_default();
    let python_names = names_after(builder, "\n        \"", &['"']);
    assert_eq!(python_names, described, "the inputs the Python SDK sends");
    let packaged = read("clients/python/src/progress_hub/_contract.py");
    assert!(packaged.contains("\"publish-inputs.json\": \"contract/publish-inputs.json\""));
    // Every answer of the script is the id, or `{id, 1}` (or a refusal), as `returns`
    // says, and both publishers read it so.
    assert!(
        CONTRACT
            .returns
            .starts_with("the event id ('<epoch>:<seq>'), or {id, 1}"),
        "{}",
        CONTRACT.returns
    );
    // (and read_all's return, which is no answer)
    let ids = [
        "id",
        "done",
        "string.sub(ring[i], #mark + 1)",
        "string.sub(last, #receipt + 2)",
        "bytes, #entries, entries[1], big",
    ];
    for line in lua.lines().filter(|l| l.contains("return ")) {
        let answer = line.split("return ").nth(1).unwrap_or_default();
        let answer = answer.trim_end().trim_end_matches(" end");
        assert!(
            ids.contains(&answer)
                || answer == "{id, 1}"
                || answer.starts_with("redis.error_reply("),
            "publish.lua answers other than the id or {{id, 1}}: {line}"
        );
    }
    assert!(
        python.contains("def published("),
        "the Python SDK reads the id or {{id, 1}}"
    );
}

// The state fields every publisher patches are the ones the description names, and the
// ones the hub reads back.
#[test]
fn the_state_patch_names_only_described_fields() {
    use progress_hub::broker::redis::publish_inputs::CONTRACT;
    let project = ProjectId::parse("contract").unwrap_or_else(|e| panic!("{e}"));
    let events = [
        json!({"event": "progress_update", "data": {"status": "QUEUED", "progress": 0, "current_stage": "q", "job_id": "j", "queue_position": 2}}),
        json!({"event": "progress_update", "data": {"status": "ASSETS_GENERATING", "progress": 30, "current_stage": "a", "units_done": 3, "units_total": 17}}),
        json!({"event": "stage_change", "data": {"current_stage": "RENDERING", "progress": 5}}),
        json!({"event": "complete", "data": {"status": "COMPLETED", "youtube_url": "https://youtube.com/watch?v=1"}}),
        json!({"event": "log", "data": {"level": "INFO", "message": "m"}}),
    ];
    let mut patched = std::collections::BTreeSet::new();
    for event in events {
        let event =
            Event::from_json(event.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let fence = progress_hub::broker::Fence {
            holder: "j".into(),
            token: 1,
        };
        let mut prepared = prepare(event, &project, Locale::En, None, Some(fence))
            .unwrap_or_else(|e| panic!("{e}"));
        // Any event may give the run its tags (the publisher adds them: `publish_tagged`).
        prepared.state.tag(Vec::new());
        patched.extend(prepared.state.patch.iter().map(|(f, _)| f.to_string()));
    }
    let described: std::collections::BTreeSet<String> =
        CONTRACT.state_fields.keys().cloned().collect();
    assert_eq!(patched, described);
    let state = read("crates/hub/src/wire/state.rs");
    for field in &described {
        assert!(
            state.contains(&format!("text(\"{field}\")")),
            "wire/state.rs does not read {field}"
        );
    }
}
