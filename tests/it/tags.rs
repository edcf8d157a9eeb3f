//! Tags (issue 26 §2): a project's run carries tags, given by `generate`, by the publish
//! API (top-level `tags`) and by the CLI; the state lists them (`"tags": [...]`), a
//! frame never carries them, and hostile tags are refused with a clear error that
//! publishes nothing.

use serde_json::{Value, json};

use crate::support::{Backend, TestHub, WsClient, layout, log_event, progress};
use progress_hub::wire::Tag;

on_both_brokers!(
    generate_and_publish_give_the_run_its_tags,
    hostile_tags_are_refused_and_publish_nothing,
);

fn tagged(event: Value, tags: Value) -> Value {
    let mut event = event;
    event["tags"] = tags;
    event
}

async fn generate_and_publish_give_the_run_its_tags(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    let (status, answer) = hub
        .generate("gen-t", &json!({"tags": ["user:7", "team:2"]}))
        .await;
    assert_eq!(status, 202, "{answer}");
    let state = hub.project_state("gen-t").await;
    assert_eq!(state["status"], "QUEUED", "{state}");
    assert_eq!(state["tags"], json!(["user:7", "team:2"]), "{state}");

    // The publish API: the tags beside the event; the frame is as it always was.
    let mut live = WsClient::connected(&hub.ws_url("pub-t")).await;
    let (status, answer) = hub
        .post_event("pub-t", &tagged(progress(10), json!(["user:7"])))
        .await;
    assert_eq!(status, 202, "{answer}");
    let frame = live.next_event().await;
    assert_eq!(frame["event"], "progress_update", "{frame}");
    assert!(
        frame.get("tags").is_none() && frame["data"].get("tags").is_none(),
        "{frame}"
    );
    // A later event without tags keeps them; one with tags replaces them.
    hub.publish("pub-t", log_event("no tags here")).await;
    assert_eq!(hub.project_state("pub-t").await["tags"], json!(["user:7"]));
    let (status, _) = hub
        .post_event("pub-t", &tagged(progress(20), json!(["team:9"])))
        .await;
    assert_eq!(status, 202);
    assert_eq!(hub.project_state("pub-t").await["tags"], json!(["team:9"]));
    // A project never tagged lists none.
    hub.publish("plain", progress(5)).await;
    assert_eq!(hub.project_state("plain").await["tags"], json!([]));

    if backend == Backend::Redis {
        // Each tag's index names the project, in the tag's own key (its own slot).
        let mut conn = hub.redis().connection().await;
        for (tag, project) in [
            ("user:7", "gen-t"),
            ("team:2", "gen-t"),
            ("user:7", "pub-t"),
        ] {
            let key = layout::tag_index_key(&Tag::parse(tag).unwrap());
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(&key)
                .arg(project)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(score.is_some(), "{key} lacks {project}");
        }
    }
}

async fn hostile_tags_are_refused_and_publish_nothing(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.worker = None).await;
    let long = "t".repeat(65);
    let many: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    let hostile = [
        json!("user:7"),
        json!([7]),
        json!([null]),
        json!([""]),
        json!([long]),
        json!(["a,b"]),
        json!(["{slot}"]),
        json!(["a b"]),
        json!(["ü"]),
        json!(["x\u{0}"]),
        json!(["a", "a"]),
        json!(many),
        json!({"tag": "user:7"}),
    ];
    for tags in hostile {
        let (status, answer) = hub
            .post_event("hostile-t", &tagged(progress(10), tags.clone()))
            .await;
        assert_eq!(status, 422, "{tags}: {answer}");
        assert_eq!(answer["error"]["field"], "tags", "{tags}: {answer}");
        let (status, answer) = hub.generate("hostile-g", &json!({"tags": tags})).await;
        assert_eq!(status, 422, "{tags}: {answer}");
        assert_eq!(answer["error"]["field"], "tags", "{tags}: {answer}");
    }
    for project in ["hostile-t", "hostile-g"] {
        let status = reqwest::get(hub.http(&format!("/api/v1/projects/{project}")))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{project} was created by a refused request");
    }
    assert_eq!(hub.post_event("hostile-t", &progress(1)).await.0, 202);
}
